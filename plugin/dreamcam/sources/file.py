"""The video-file source: a file played through OpenCV in a loop, at its own rate."""

from __future__ import annotations

import cv2
import numpy as np

from dreamcam.errors import DeviceError
from dreamcam.sources.base import SignalLost, Source, check_file, quiet_opencv, to_rgb

FILE_FPS_FALLBACK = 30.0  # when a container does not say its rate


class VideoFileSource(Source):
    """A video file through OpenCV, looping forever, paced at its own frame rate.

    Args:
        path: any container/codec OpenCV's FFmpeg backend reads (mp4, mkv, avi, webm, ...).
        fps: play at this rate instead of the file's (frames/s, > 0).
    """

    kind = "file"

    def __init__(self, path: str, *, fps: float | None = None, mirror: bool = False, **retry: float) -> None:
        super().__init__(fps=fps, mirror=mirror, **retry)
        self.path = path
        self.file_fps = 0.0
        self.loops = 0  # times playback wrapped to the start
        self._cap: cv2.VideoCapture | None = None
        self._first: np.ndarray | None = None

    def _open(self) -> None:
        check_file(self.path, "video file")
        self._connect()
        rate = self.file_fps if 1.0 <= self.file_fps <= 1000.0 else FILE_FPS_FALLBACK
        self.target_fps = self.target_fps or rate

    def _connect(self) -> None:
        with quiet_opencv():
            cap = cv2.VideoCapture(self.path)
            ok, image = cap.read() if cap.isOpened() else (False, None)
        if not ok or image is None:
            cap.release()
            raise DeviceError(
                f"cannot read video {self.path}: OpenCV found no frame it can decode; "
                "convert it, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p out.mp4"
            )
        self.file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._cap, self._first = cap, image

    def _reopen(self) -> None:
        self._connect()

    def _grab(self) -> np.ndarray:
        if self._first is not None:
            image, self._first = self._first, None
            return to_rgb(image)
        if self._cap is None:
            raise SignalLost("video not open")
        ok, image = self._cap.read()
        if not ok:  # end of file: wrap (seek, or re-open where the container cannot seek)
            self.loops += 1
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
            if not ok:
                self._release()
                try:
                    self._connect()
                except DeviceError as e:
                    raise SignalLost(str(e)) from e
                return self._grab()
        return to_rgb(image)

    def _release(self) -> None:
        cap, self._cap, self._first = self._cap, None, None
        if cap is not None:
            cap.release()
