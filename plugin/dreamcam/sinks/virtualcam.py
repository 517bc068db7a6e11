"""The virtual-camera sink (pyvirtualcam: v4l2loopback, OBS Virtual Camera, Unity Capture)."""

from __future__ import annotations

import logging
import platform

from dreamcam.errors import DeviceError
from dreamcam.frames import Frame
from dreamcam.sinks.base import Framer, Sink

log = logging.getLogger(__name__)

VIRTUALCAM_SIZE = (1280, 720)


def install_hint() -> str:
    """How to get a virtual camera on this OS (`dreamcam run` and `dreamcam devices` say the same)."""
    system = platform.system()
    if system == "Linux":
        return (
            "install v4l2loopback (Debian/Ubuntu: sudo apt install v4l2loopback-dkms) and load it: "
            "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=dreamcam"
        )
    if system == "Darwin":
        # pyvirtualcam >= 0.10 needs OBS 28+ on macOS, >= 0.14 OBS 30+ on macOS 13 and later (its README)
        return ("install OBS Studio 30+ (28+ on macOS 12 and older) and start its Virtual Camera once "
                "(Controls -> Start Virtual Camera), then stop it")
    return "install OBS Studio 26+ (it brings the OBS Virtual Camera that dreamcam sends to)"


def registered_backends() -> list[str]:
    """The pyvirtualcam backend names here, built-in and registered by a program."""
    from pyvirtualcam.camera import BACKENDS  # lazy: as in _open, a missing pyvirtualcam fails only this sink

    return list(BACKENDS)


class VirtualCamSink(Sink):
    """A virtual camera through pyvirtualcam, RGB at `width` x `height` (default 1280x720).

    Args:
        backend: a pyvirtualcam backend name ("v4l2loopback", "obs", "unitycapture", or one a
            program registered); None tries every registered backend in turn.
        device: the device to use (e.g. "/dev/video10"); None: the backend's first free one.
        fit_mode: how the engine image is framed to the output: letterbox (default: black bars,
            nothing cut), crop or stretch.
    """

    kind = "virtualcam"
    paced = True

    def __init__(self, width: int, height: int, fps: float = 30.0, *, backend: str | None = None,
                 device: str | None = None, fit_mode: str = "letterbox") -> None:
        super().__init__(width, height, fps)
        self.backend, self.device = backend, device
        self._framer = Framer(width, height, fit_mode)
        self._cam = None

    def _open(self) -> None:
        try:
            import pyvirtualcam  # lazy: without it only this sink fails, saying what to install
        except ImportError as e:
            raise DeviceError("the virtualcam sink needs pyvirtualcam: pip install pyvirtualcam") from e
        try:
            self._cam = pyvirtualcam.Camera(
                self.width, self.height, self.fps, fmt=pyvirtualcam.PixelFormat.RGB, backend=self.backend, device=self.device
            )
        except Exception as e:
            reasons = "; ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
            what = f"virtual camera backend {self.backend!r} failed" if self.backend else "no virtual camera backend is usable"
            raise DeviceError(f"{what} ({reasons}); to fix: {install_hint()}") from e
        log.info("virtual camera %s (%s backend), %dx%d at %.3g fps", self._cam.device, self._cam.backend, self.width, self.height, self.fps)

    @property
    def backend_name(self) -> str | None:
        """The pyvirtualcam backend in use once started."""
        return self._cam.backend if self._cam is not None else None

    def _send(self, frame: Frame) -> None:
        self._cam.send(self._framer(frame.image))

    def _release(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None
