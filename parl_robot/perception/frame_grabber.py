"""Newest-frame camera reader: drains an OpenCV capture on its own thread.

OpenCV's V4L2 backend queues 4 buffers; when the application reads slower than the camera
delivers, the queue fills and `read()` hands out frames hundreds of milliseconds old. Reading
continuously keeps the queue empty, so each frame is dequeued just after its exposure; the grabber
keeps only the newest, stamped when `read()` returns (Bridge's streamer and SERL's video capture do
the same). It also reopens a lost device, counts frames and byte-identical repeats (a frozen
driver). No ROS here: the camera node publishes from it, tests drive it with a fake capture.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np


class Capture(Protocol):
    """The part of cv2.VideoCapture the grabber uses."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8, BGR as the capture returns it
    capture_time: float  # time.time() when read() returned
    capture_monotonic: float  # time.monotonic() at the same moment: ages immune to clock steps
    serial: int  # 1, 2, ... over the grabber's life, across reconnects


@dataclass(frozen=True)
class GrabberStats:
    frames: int  # frames read since start
    connected: bool
    reconnects: int
    identical_streak: int  # how many newest frames in a row were byte-identical to the one before
    identical_total: int


class FrameGrabber:
    """Reads `capture` until stopped. When a read fails the device is released and `reopen()` (which
    raises while the device is absent) is tried every `reconnect_interval_s`."""

    def __init__(
        self,
        capture: Capture,
        reopen: Callable[[], Capture],
        reconnect_interval_s: float = 1.0,
        name: str = "camera",
        logger=None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.reopen = reopen
        self.reconnect_interval_s = reconnect_interval_s
        self.name = name
        self.logger = logger or logging.getLogger(__name__)
        self.clock, self.monotonic = clock, monotonic
        self._capture: Capture | None = capture
        self._latest: Frame | None = None
        self._frames = self._reconnects = self._identical_streak = self._identical_total = 0
        self._new_frame = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"frame-grabber-{name}", daemon=True)

    def start(self) -> FrameGrabber:
        self._thread.start()
        return self

    def latest(self) -> Frame | None:
        with self._new_frame:
            return self._latest

    def wait_for_frame(self, newer_than: int = 0, timeout: float | None = None) -> Frame | None:
        """The newest frame once its serial exceeds `newer_than`; None if none came within `timeout`."""
        with self._new_frame:
            self._new_frame.wait_for(lambda: self._latest is not None and self._latest.serial > newer_than, timeout)
            return self._latest if self._latest is not None and self._latest.serial > newer_than else None

    def stats(self) -> GrabberStats:
        with self._new_frame:
            return GrabberStats(self._frames, self._capture is not None, self._reconnects,
                                self._identical_streak, self._identical_total)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop reading and release the device; False if the thread is still stuck in read()
        after `timeout` (it releases the device when read() returns)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        elif self._capture is not None:  # never started
            self._capture.release()
            self._capture = None
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._capture is None:
                    self._reconnect()
                else:
                    self._read_one()
        finally:
            if self._capture is not None:
                self._capture.release()
            with self._new_frame:
                self._capture = None
                self._new_frame.notify_all()

    def _read_one(self) -> None:
        why = ""
        try:
            ok, image = self._capture.read()
        except Exception as err:  # a driver error (cv2.error) is a lost device too
            ok, image, why = False, None, f" ({type(err).__name__}: {err})"
        capture_monotonic, capture_time = self.monotonic(), self.clock()
        if not ok or image is None:
            if self._stop.is_set():
                return
            self.logger.error(f"camera '{self.name}' lost{why}; reconnecting every {self.reconnect_interval_s:g} s")
            self._capture.release()
            with self._new_frame:
                self._capture = None
            return
        previous = self._latest  # only this thread replaces it
        identical = previous is not None and previous.image.shape == image.shape and np.array_equal(previous.image, image)
        with self._new_frame:
            self._identical_streak = self._identical_streak + 1 if identical else 0
            self._identical_total += int(identical)
            self._frames += 1
            self._latest = Frame(image, capture_time, capture_monotonic, self._frames)
            self._new_frame.notify_all()

    def _reconnect(self) -> None:
        if self._stop.wait(self.reconnect_interval_s):
            return
        try:
            capture = self.reopen()
        except Exception:  # still absent (open_capture raises RuntimeError) or a driver error: retry
            return
        with self._new_frame:
            self._capture = capture
            self._reconnects += 1
        self.logger.info(f"camera '{self.name}' reconnected")


def open_capture(device: str, width: int, height: int, fps: float) -> Capture:
    """The OpenCV capture of a camera index ("0") or a device / file path, at the requested size and rate."""
    import cv2

    source = int(device) if device.isdigit() else device
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise RuntimeError(f"camera '{device}' could not be opened (does the device exist? try `v4l2-ctl --list-devices`)")
    capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    capture.set(cv2.CAP_PROP_FPS, fps)
    return capture
