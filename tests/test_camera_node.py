"""Camera node against a real OpenCV capture: a video file stands in for the USB device (OpenCV's
VideoCapture opens both); its end plays the part of a camera that drops out."""

import os

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from parl_robot.nodes.camera_node import CameraNode, crop_and_resize  # noqa: E402


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


def test_camera_node_publishes_rgb8_reports_loss_and_reconnects(ros, tmp_path, monkeypatch):
    video = tmp_path / "camera.avi"
    _write_video(video)
    rclpy.init(args=["--ros-args", "-p", f"device:={video}", "-p", "fps:=10.0"])
    node = CameraNode()
    published, errors = [], []
    monkeypatch.setattr(node.image_pub, "publish", published.append)
    logger = node.get_logger()
    monkeypatch.setattr(type(logger), "error", lambda self, message, **kw: errors.append(message))
    monkeypatch.setattr("parl_robot.nodes.camera_node.RECONNECT_INTERVAL_S", 0.0)
    try:
        for _ in range(4):
            node.on_tick()
        assert len(published) == 4
        msg = published[0]
        assert msg.encoding == "rgb8" and (msg.width, msg.height) == (128, 128) and msg.header.stamp.sec > 0
        image = np.frombuffer(bytes(msg.data), np.uint8).reshape(128, 128, 3)
        assert image[:, :, 2].mean() < 10 and 20 < image[:, :, 0].mean() < 60  # RGB order, band cropped away
        node.on_tick()  # end of the "stream": the camera is lost
        assert not node.connected and any("lost" in e for e in errors)
        node.on_tick()  # reopens the device and publishes again
        assert node.connected and len(published) == 5
    finally:
        node.close()
        node.destroy_node()


def test_missing_camera_device_fails_with_a_clear_error(ros):
    rclpy.init(args=["--ros-args", "-p", "device:=/dev/video_parl_missing"])
    with pytest.raises(RuntimeError, match="could not be opened.*v4l2-ctl"):
        CameraNode()
