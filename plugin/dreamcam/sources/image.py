"""The still-image source: one picture repeated at a steady rate."""

from __future__ import annotations

import cv2
import numpy as np

from dreamcam.errors import DeviceError
from dreamcam.sources.base import Source, check_file, to_rgb


class ImageSource(Source):
    """A still image repeated at `fps` (frames/s, > 0), each a fresh copy with its own timestamp."""

    kind = "image"

    def __init__(self, path: str, *, fps: float = 30.0, mirror: bool = False) -> None:
        super().__init__(fps=fps, mirror=mirror)
        self.path = path
        self.image: np.ndarray | None = None

    def _open(self) -> None:
        check_file(self.path, "image")
        # read by Python, decoded by OpenCV: cv2.imread opens the file with the narrow C API, which on
        # Windows cannot open a path with non-ASCII characters (opencv/opencv#4292; returns None)
        try:
            data = np.fromfile(self.path, dtype=np.uint8)
        except OSError as e:
            raise DeviceError(f"cannot read image {self.path}: {e.strerror or e}") from e
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            raise DeviceError(f"cannot read image {self.path}: not an image OpenCV decodes (png, jpg, bmp, webp, tiff)")
        self.image = to_rgb(image)

    def _grab(self) -> np.ndarray:
        return self.image.copy()
