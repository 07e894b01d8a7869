"""Frame grabber and camera node. A fake capture emulates a V4L2 camera behind cv2.VideoCapture
(frames exposed at a rate into 4 buffers, read() blocking, unplugging); a video file stands in for
a real device where OpenCV's own capture is wanted (VideoCapture opens both; its end plays the
part of a camera that drops out)."""

import json
import os
import threading
import time
from collections import deque

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.time import Time  # noqa: E402

from parl_robot.nodes import camera_node  # noqa: E402
from parl_robot.nodes.camera_node import CameraNode, crop_and_resize  # noqa: E402
from parl_robot.perception.frame_grabber import Frame, FrameGrabber  # noqa: E402

BUDGET_S = 20.0  # generous: the conditions below normally hold within milliseconds
CLOCK_PAIRING_SLACK_NS = 50_000_000


class FakeV4L2Capture:
    """cv2.VideoCapture on a V4L2 camera: a frame is exposed every 1/rate_hz s into `buffers` queue
    slots; with all slots full the driver drops the new frame, so a slow reader gets old ones.
    read() blocks until a frame is queued and returns (False, None) once unplugged; reopening works
    again after `replug()`. Frame i carries i in its first pixel (unless `frozen`: all alike)."""

    def __init__(self, rate_hz=100.0, buffers=4, prefill=0, frozen=False):
        self.period, self.buffers, self.frozen = 1.0 / rate_hz, buffers, frozen
        self.cond = threading.Condition()
        self.queue: deque[int] = deque()
        self.exposed = self.reads = self.open_attempts = 0
        self.returned_at: dict[int, float] = {}  # frame index -> time.monotonic() as read() returned it
        self.plugged = self.opened = True
        self.paused = self.closed = False
        self.reads_while_released = 0
        with self.cond:
            for _ in range(prefill):  # buffers filled before anyone read: the stale queue
                self._expose()
        self.thread = threading.Thread(target=self._produce, daemon=True)
        self.thread.start()

    def _expose(self):
        if len(self.queue) < self.buffers:
            self.queue.append(self.exposed)
        self.exposed += 1
        self.cond.notify_all()

    def _produce(self):
        while not self.closed:
            time.sleep(self.period)
            with self.cond:
                if self.plugged and self.opened and not self.paused:
                    self._expose()

    def image(self, index):
        image = np.zeros((24, 32, 3), np.uint8)
        if not self.frozen:
            image[0, 0] = (index & 255, (index >> 8) & 255, (index >> 16) & 255)
        return image

    def read(self):
        with self.cond:
            if not self.opened:
                self.reads_while_released += 1
                return False, None
            self.cond.wait_for(lambda: self.queue or not self.plugged or not self.opened)
            if not self.plugged or not self.opened:
                return False, None
            index = self.queue.popleft()
            self.reads += 1
            self.returned_at[index] = time.monotonic()
            return True, self.image(index)

    def isOpened(self):  # noqa: N802 (cv2 name)
        return self.opened

    def set(self, prop, value):
        return True

    def release(self):
        with self.cond:
            self.opened = False
            self.queue.clear()
            self.cond.notify_all()

    def reopen(self):
        with self.cond:
            self.open_attempts += 1
            if not self.plugged:
                raise RuntimeError("camera could not be opened")
            self.opened = True
            return self

    def unplug(self):
        with self.cond:
            self.plugged = False
            self.cond.notify_all()

    def replug(self):
        with self.cond:
            self.plugged = True

    def settled(self, grabber) -> bool:
        """Paused and the grabber has stored every frame read: nothing is on its way."""
        with self.cond:
            return self.paused and not self.queue and grabber.stats().frames == self.reads

    def close(self):
        self.closed = True
        self.thread.join()


def frame_index(frame) -> int:
    b, g, r = (int(v) for v in frame.image[0, 0])
    return b | g << 8 | r << 16


def wait_until(condition, what, budget=BUDGET_S):
    deadline = time.monotonic() + budget
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class RecordingLogger:
    def __init__(self):
        self.messages = []

    def info(self, message, **kw):
        self.messages.append(("info", message))

    def warning(self, message, **kw):
        self.messages.append(("warning", message))

    def error(self, message, **kw):
        self.messages.append(("error", message))


@pytest.fixture
def fakes():
    made = []
    yield lambda **kw: made.append(FakeV4L2Capture(**kw)) or made[-1]
    for fake in made:
        fake.close()


def test_grabber_serves_the_newest_frame_stamped_at_read_never_the_stale_queue(fakes):
    fake = fakes(rate_hz=100.0, prefill=4)  # 4 frames waiting in the driver since long ago
    wall_before = time.time()
    grabber = FrameGrabber(fake, fake.reopen).start()
    served = []
    while not served or frame_index(served[-1]) < 30:
        frame = grabber.wait_for_frame(newer_than=served[-1].serial if served else 0, timeout=BUDGET_S)
        assert frame is not None, "no new frame"
        served.append(frame)
        seen_at = time.monotonic()
        # Stamped when read() returned, not earlier (exposure) nor later (when asked for it).
        assert fake.returned_at[frame_index(frame)] <= frame.capture_monotonic <= seen_at
        assert wall_before <= frame.capture_time <= time.time()
    indices = [frame_index(f) for f in served]
    assert indices == sorted(set(indices)) and [f.serial for f in served] == sorted({f.serial for f in served})
    # A consumer that asks after the frames have run on gets the newest read, never a queued one.
    wait_until(lambda: fake.exposed > indices[-1] + 20, "20 more exposures")
    fake.paused = True
    wait_until(lambda: fake.settled(grabber), "the grabber to drain the queue")
    newest = grabber.latest()
    assert frame_index(newest) == max(fake.returned_at) and newest.serial == fake.reads == grabber.stats().frames
    fake.paused = False  # a live camera: read() returns within a frame period
    assert grabber.stop() and not fake.opened  # clean stop: thread ended, device released
    assert fake.reads_while_released == 0


def test_grabber_reconnects_after_the_camera_is_unplugged(fakes):
    fake, logger = fakes(rate_hz=200.0), RecordingLogger()
    grabber = FrameGrabber(fake, fake.reopen, reconnect_interval_s=0.01, name="/dev/video9", logger=logger).start()
    before = grabber.wait_for_frame(timeout=BUDGET_S)
    assert before is not None and grabber.stats().connected
    fake.unplug()
    wait_until(lambda: not grabber.stats().connected, "the loss to be noticed")
    wait_until(lambda: fake.open_attempts >= 3, "reopen attempts while unplugged")
    assert not fake.opened and grabber.stats().reconnects == 0
    lost = grabber.latest().serial
    fake.replug()
    after = grabber.wait_for_frame(newer_than=lost, timeout=BUDGET_S)
    assert after is not None and grabber.stats().connected and grabber.stats().reconnects == 1
    assert ("error", "camera '/dev/video9' lost; reconnecting every 0.01 s") in logger.messages
    assert ("info", "camera '/dev/video9' reconnected") in logger.messages
    assert grabber.stop()


def test_grabber_stops_while_waiting_to_reconnect_and_before_starting(fakes):
    fake = fakes()
    grabber = FrameGrabber(fake, fake.reopen, reconnect_interval_s=3600.0, logger=RecordingLogger()).start()
    assert grabber.wait_for_frame(timeout=BUDGET_S) is not None
    fake.unplug()
    wait_until(lambda: not grabber.stats().connected, "the loss to be noticed")
    assert grabber.stop(timeout=BUDGET_S)  # not after the hour-long reconnect interval
    never_started = fakes()
    assert FrameGrabber(never_started, never_started.reopen).stop() and not never_started.opened


def test_grabber_counts_byte_identical_frames(fakes):
    fake = fakes(frozen=True)
    grabber = FrameGrabber(fake, fake.reopen).start()
    wait_until(lambda: grabber.stats().identical_streak >= 3, "3 identical frames in a row")
    fake.frozen = False
    wait_until(lambda: grabber.stats().identical_streak == 0, "a changing frame")
    stats = grabber.stats()
    assert stats.identical_total >= 3 and stats.frames > stats.identical_total
    assert grabber.stop()


def _write_video(path, frames=4, size=(320, 240)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:, :, 2] = 40 * (i + 1)  # red channel (BGR) grows per frame
        frame[:, : size[0] // 8] = (255, 0, 0)  # a blue band on the left, outside the centre 1:1 crop
        writer.write(frame)
    writer.release()


@pytest.fixture
def ros(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    yield
    if rclpy.ok():
        rclpy.shutdown()


def test_crop_and_resize_centre_crops_to_the_policy_aspect():
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[:, :40] = (255, 0, 0)  # BGR blue band outside the centre 240x240 crop
    frame[:, 40:280] = (0, 0, 255)  # BGR red inside
    rgb = crop_and_resize(frame, 128, 128)
    assert rgb.shape == (128, 128, 3) and np.all(rgb[:, :, 0] == 255) and np.all(rgb[:, :, 2] == 0)


def test_capture_stamp_is_the_ros_time_of_the_read():
    frame = Frame(np.zeros((2, 2, 3), np.uint8), capture_time=0.0, capture_monotonic=4.75, serial=1)
    assert camera_node.capture_stamp(Time(nanoseconds=10 * 10**9), 5.0, frame) == Time(nanoseconds=9_750_000_000)


def _stamp_ns(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_camera_node_publishes_rgb8_reports_loss_and_reconnects(ros, tmp_path, monkeypatch):
    video = tmp_path / "camera.avi"
    _write_video(video)
    monkeypatch.setattr(camera_node, "RECONNECT_INTERVAL_S", 0.01)
    errors = []
    monkeypatch.setattr(type(rclpy.logging.get_logger("camera")), "error", lambda self, message, **kw: errors.append(message))
    rclpy.init(args=["--ros-args", "-p", f"device:={video}", "-p", "fps:=10.0"])
    node = CameraNode()
    published = []
    monkeypatch.setattr(node.image_pub, "publish", published.append)
    try:
        # The grabber reads the 4 frames, hits the end (the camera is lost) and reopens the file.
        wait_until(lambda: node.grabber.stats().reconnects >= 1 and node.grabber.stats().frames > 4, "a reconnect")
        assert any("lost" in e for e in errors)
        node.on_tick()
        assert len(published) == 1
        msg = published[0]
        assert msg.encoding == "rgb8" and (msg.width, msg.height) == (128, 128) and msg.header.stamp.sec > 0
        image = np.frombuffer(bytes(msg.data), np.uint8).reshape(128, 128, 3)
        assert image[:, :, 2].mean() < 10 and 20 < image[:, :, 0].mean() < 180  # RGB order, band cropped away
    finally:
        node.close()
        node.destroy_node()


def test_camera_node_publishes_each_new_frame_once_with_its_capture_stamp(ros, fakes, monkeypatch):
    fake = fakes(rate_hz=100.0)
    monkeypatch.setattr(camera_node, "open_capture", lambda *args: fake.reopen())
    warnings = []
    monkeypatch.setattr(type(rclpy.logging.get_logger("camera")), "warning",
                        lambda self, message, **kw: warnings.append(message))
    monkeypatch.setattr(camera_node, "STALE_AFTER_S", 0.1)
    rclpy.init(args=["--ros-args", "-p", "device:=fake", "-p", "fps:=10.0"])
    node = CameraNode()
    published, statuses = [], []
    monkeypatch.setattr(node.image_pub, "publish", published.append)
    monkeypatch.setattr(node.status_pub, "publish", lambda msg: statuses.append(json.loads(msg.data)))
    clock_ns = lambda: node.get_clock().now().nanoseconds  # noqa: E731
    try:
        assert node.grabber.wait_for_frame(timeout=BUDGET_S) is not None
        fake.paused = True
        wait_until(lambda: fake.settled(node.grabber), "the queue drained")
        newest = node.grabber.latest()
        time.sleep(0.3)  # the frame ages: its stamp must say when it was taken, not when it was sent
        node.on_tick()
        node.on_tick()  # nothing new: nothing republished
        assert len(published) == 1 and (published[0].width, published[0].height) == (128, 128)
        assert clock_ns() - _stamp_ns(published[0]) >= 0.3e9
        assert any("no new frame from camera 'fake'" in w for w in warnings)
        node.publish_status()
        status = statuses[-1]
        assert status["connected"] and status["frames"] == fake.reads and status["age_s"] >= 0.3
        assert status["identical_frames"] == 0 and not status["frozen"] and status["fps"] >= 0

        resumed_at = clock_ns()
        fake.paused = False
        assert node.grabber.wait_for_frame(newer_than=newest.serial, timeout=BUDGET_S) is not None
        node.on_tick()
        # Taken after the resume; the slack covers only the node reading its two clocks one after the other.
        assert len(published) == 2 and resumed_at - CLOCK_PAIRING_SLACK_NS <= _stamp_ns(published[1]) <= clock_ns()

        fake.frozen = True
        wait_until(lambda: node.grabber.stats().identical_streak >= camera_node.FROZEN_AFTER_IDENTICAL, "a frozen driver")
        node.on_tick()
        assert any("byte-identical frames" in w for w in warnings)
        node.publish_status()
        assert statuses[-1]["frozen"] and statuses[-1]["identical_frames"] >= 3 and statuses[-1]["fps"] > 0
    finally:
        fake.paused = False
        node.close()
        node.destroy_node()
    assert not fake.opened


def test_missing_camera_device_fails_with_a_clear_error(ros):
    rclpy.init(args=["--ros-args", "-p", "device:=/dev/video_parl_missing"])
    with pytest.raises(RuntimeError, match="could not be opened.*v4l2-ctl"):
        CameraNode()


def test_acting_nodes_judge_image_freshness_by_the_capture_stamp_not_arrival():
    from types import SimpleNamespace

    from parl_robot.config import TaskConfig
    from parl_robot.nodes.common import rgb_image_message
    from parl_robot.nodes.acting_node import ActingNode

    cfg = TaskConfig()
    cfg.learner.observation, cfg.learner.max_observation_age_s = "image", 0.5
    now_s = [1000.0]
    learner = SimpleNamespace(
        cfg=cfg, image=None, image_stamp=None, poses_stamp=None, input_times={"objects/poses": time.monotonic()},
        arrival_wall={},
        get_clock=lambda: SimpleNamespace(now=lambda: Time(nanoseconds=int(now_s[0] * 1e9))),
        get_logger=lambda: rclpy.logging.get_logger("learner_test"),
    )
    assert ActingNode.stale_inputs(learner) == ["camera/image_raw (none received)"]
    frame = np.zeros((8, 8, 3), np.uint8)
    ActingNode.on_image(learner, rgb_image_message(frame, Time(nanoseconds=int(999.8 * 1e9)).to_msg()))
    assert ActingNode.stale_inputs(learner) == []  # 0.2 s old
    # Arriving now but captured 0.9 s ago (it waited in a queue): stale, and the warning says how old.
    ActingNode.on_image(learner, rgb_image_message(frame, Time(nanoseconds=int(999.1 * 1e9)).to_msg()))
    assert ActingNode.stale_inputs(learner) == ["camera/image_raw (0.90 s old by its capture stamp)"]
    now_s[0] = 998.0  # the learner's clock behind the camera's
    assert "in the future: are the clocks synchronized?" in ActingNode.stale_inputs(learner)[0]
    cfg.learner.observation = "state"
    assert ActingNode.stale_inputs(learner) == []
