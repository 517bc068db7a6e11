"""The camera source: OpenCV's VideoCapture (V4L2 on Linux), reconnecting when the camera goes away."""

from __future__ import annotations

import glob
import logging
import os
import sys
from collections.abc import Callable

import cv2
import numpy as np

from dreamcam.errors import ConfigError, DeviceError
from dreamcam.sources.base import SignalLost, Source, quiet_opencv, to_rgb

log = logging.getLogger(__name__)

ANYWHERE = "or try a source that works anywhere: --source testpattern, or a video with --source file:PATH"


def open_camera(device: int | str) -> cv2.VideoCapture:
    """The default camera opener: V4L2 on Linux, OpenCV's pick elsewhere."""
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") and (isinstance(device, int) or device.startswith("/dev/")) else cv2.CAP_ANY
    return cv2.VideoCapture(device, api)


def present_cameras() -> list[str]:
    """Camera device nodes present on Linux (no probing); empty elsewhere."""
    return sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p)) if sys.platform.startswith("linux") else []


class WebcamSource(Source):
    """A camera through OpenCV's VideoCapture, BGR -> RGB, optionally mirrored.

    Args:
        device: camera index (0..) or device path (`/dev/video0`), or anything `open_capture`
            understands (tests give a video file).
        width, height: requested capture size in pixels (the driver may pick the nearest it has;
            `size` tells what it gave).
        fps: requested capture rate (frames/s); the camera paces the loop, `fps` measures it.
        fourcc: requested pixel format, e.g. "MJPG" (lets USB cameras reach 720p/1080p at 30 fps).
        open_capture: builds the `cv2.VideoCapture` for `device`; default `open_camera`.
    """

    kind = "webcam"

    def __init__(
        self,
        device: int | str = 0,
        *,
        width: int | None = 1280,
        height: int | None = 720,
        fps: float | None = None,
        fourcc: str | None = None,
        mirror: bool = False,
        open_capture: Callable[[int | str], cv2.VideoCapture] = open_camera,
        **retry: float,
    ) -> None:
        super().__init__(fps=None, mirror=mirror, **retry)
        if fourcc is not None and len(fourcc) != 4:
            raise ConfigError(f"fourcc must be 4 characters like MJPG or YUYV, got {fourcc!r}")
        if fps is not None and not fps > 0:
            raise ConfigError(f"camera fps must be > 0, got {fps!r}")
        self.device, self.fourcc = device, fourcc
        self.requested = (width, height, fps)
        self._open_capture = open_capture
        self._cap: cv2.VideoCapture | None = None
        self.size: tuple[int, int] | None = None  # (width, height) the driver gave
        self.driver_fps = 0.0

    def _open(self) -> None:
        try:
            self._connect()
        except DeviceError as e:
            present = present_cameras()
            have = f"cameras present: {', '.join(present)}" if present else "no camera device nodes found"
            if not sys.platform.startswith("linux"):
                have = "cameras are numbered from 0"
            if sys.platform == "darwin":  # OpenCV's AVFoundation capture fails until access is granted
                have += ("; macOS lets a terminal use the camera only once allowed: System Settings -> "
                         "Privacy & Security -> Camera, tick your terminal app and start it again")
            raise DeviceError(f"{e}; {have} (list what opens with `dreamcam devices`); {ANYWHERE}") from e

    def _reopen(self) -> None:
        self._connect()

    def check(self) -> None:
        node = self.device
        if isinstance(node, int) and self._open_capture is open_camera and sys.platform.startswith("linux"):
            node = f"/dev/video{node}"  # V4L2 opens camera N as this node
        if isinstance(node, str) and node.startswith("/dev/") and not os.path.exists(node):
            self._open()  # raises start()'s line (with the cameras present) without opening any

    def _connect(self) -> None:
        if isinstance(self.device, str) and self.device.startswith("/dev/") and not os.path.exists(self.device):
            raise DeviceError(f"camera {self.device} does not exist")
        with quiet_opencv():
            cap = self._open_capture(self.device)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise DeviceError(f"camera {self.device} did not open")
        width, height, fps = self.requested
        if self.fourcc:  # before the size: many drivers offer large sizes only in MJPG
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
        if width and height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a driver queue
        self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.driver_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        log.info("camera %s: %sx%s at %.1f fps (asked %s)", self.device, *self.size, self.driver_fps, self.requested)
        self._cap = cap

    def _grab(self) -> np.ndarray:
        cap = self._cap
        if cap is None:
            raise SignalLost("camera not open")
        try:
            ok, image = cap.read()
        except cv2.error as e:
            raise SignalLost(f"read error: {e}") from e
        if not ok or image is None:
            raise SignalLost(f"camera {self.device} gave no frame")
        return to_rgb(image)

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
