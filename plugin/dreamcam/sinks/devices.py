"""Outputs. Each sink runs in its own named thread fed through a newest-only hand-over.

`open_sink(spec, ...)` parses a `--sink` value. Every sink:

- `start()` opens the output (errors at open are DreamcamError: ConfigError / DeviceError);
- `write(frame)` never blocks (a lock and a deque append): the frame replaces any the sink has
  not taken yet (counted in `dropped`); the recorder keeps a buffer instead, so a recording
  has every frame unless the encoder falls seconds behind;
- live outputs (virtual camera, UDP) send at most `fps` frames per second: a frame that comes
  before the next 1/fps tick waits in the slot (a newer one replaces it, counted in `dropped`),
  a frame that comes later is sent at once, so pacing adds no latency when the engine is the
  slow part (a virtual camera's reader takes the newest frame at its own rate; sending faster
  only costs CPU);
- `written`, `dropped`, `latencies_ms` (capture-to-written, as far as the process can see),
  `error` (the first failure; the sink keeps trying with later frames); `close()` writes what
  is buffered, then releases (idempotent; a failure there also goes to `error`, never raised,
  so the other outputs still close). Sinks are context managers.

Sinks keep a reference to `frame.image` until it is sent: the writer must not reuse it.
Here: the base, `Framer`, null and virtual camera; `dreamcam.sinks.encoders`: UDP MPEG-TS and the
recorder (PyAV); `dreamcam.sinks.preview`: the window.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from dreamcam.errors import ConfigError, DeviceError
from dreamcam.frames import Frame, LatestSlot, check_fit_mode, fit, placement, resize

log = logging.getLogger(__name__)

VIRTUALCAM_SIZE = (1280, 720)


class Sink:
    """Base: a thread taking frames from a `LatestSlot` and calling `_send(frame)` on each.

    Args:
        width, height: output frame size in pixels.
        fps: output rate in frames/s (> 0); live sinks send at most this many frames/s.
    """

    kind = "sink"
    depth = 1  # frames buffered between the engine and this sink
    paced = False  # True: at most `fps` frames per second
    recovers = False  # True: the sink re-opens itself after a failure; `error` clears when it works again
    poll_s = 0.1  # how often the thread looks for close() while no frame comes

    def __init__(self, width: int, height: int, fps: float = 30.0) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._slot = LatestSlot(self.depth)
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.written = 0
        self.latencies_ms: deque[float] = deque(maxlen=600)
        self.error: BaseException | None = None  # the first failure (None again once a `recovers` sink works)
        self.outages = 0  # failures a `recovers` sink came back from

    # subclasses: open the output (raise DreamcamError), send one frame, release
    def _open(self) -> None:
        pass

    def _send(self, frame: Frame) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def start(self) -> Sink:
        self._open()
        self._thread = threading.Thread(target=self._loop, name=f"dreamcam-sink-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        period = 1.0 / self.fps if self.paced else 0.0
        next_due = 0.0
        while True:
            wait = next_due - time.perf_counter()
            if wait > 0:
                self._closing.wait(wait)  # frames written meanwhile replace each other in the slot
            frame = self._slot.get(timeout=self.poll_s)
            if frame is None:
                if self._slot.closed:
                    return
                continue
            # on a schedule of 1/fps ticks, so a late wake-up does not lower the rate; never two
            # frames closer than half a tick
            next_due = max(next_due + period, time.perf_counter() + period / 2)
            try:
                self._send(frame)
            except Exception as e:  # a failing output is reported, the others keep running
                if self.error is None:
                    if self.recovers:
                        log.warning("%s sink failed: %s; it re-opens itself until it works", self.kind, e)
                    else:
                        log.error("%s sink failed: %s", self.kind, e)
                    self.error = e
                continue
            self.written += 1
            self.latencies_ms.append((time.perf_counter() - frame.t_capture) * 1000.0)
            if self.error is not None and self.recovers:  # back after an outage: not a failure at exit
                log.warning("%s sink works again", self.kind)
                self.error = None
                self.outages += 1

    def write(self, frame: Frame) -> None:
        self._slot.put(frame)

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._slot.close()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        try:
            self._release()
        except Exception as e:  # e.g. the disk filled up: finishing the file fails like a frame did
            if self.error is None:
                log.error("%s sink failed while closing: %s", self.kind, e)
                self.error = e

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Framer:
    """Frames images to (height, width, 3) into one reused buffer; same pixels as `frames.fit`.

    letterbox (scale to fit, black bars) and stretch write into the buffer, so the result is
    valid until the next call; crop and same-size images go through `fit` (same-size: returned
    as is). Resizing is `frames.resize`, as in `fit`.
    """

    def __init__(self, width: int, height: int, mode: str = "letterbox") -> None:
        self.width, self.height, self.mode = width, height, check_fit_mode(mode)
        self._buf = np.zeros((height, width, 3), dtype=np.uint8)
        self._src_hw: tuple[int, int] | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if (h, w) == (self.height, self.width) or self.mode == "crop":
            return fit(image, self.width, self.height, self.mode)
        if (h, w) != self._src_hw:
            self._src_hw = (h, w)
            p = placement(w, h, self.width, self.height, self.mode)  # letterbox, stretch: the whole source
            (x0, y0), (sw, sh) = p.offset, p.size
            self._buf[:] = 0
            self._dst = self._buf[y0 : y0 + sh, x0 : x0 + sw]
            self._size = (sw, sh)
        self._dst[...] = resize(image, *self._size)  # the same filter as `fit`, so the same pixels
        return self._buf


class NullSink(Sink):
    """Discards frames (benchmarks, dry runs)."""

    kind = "null"

    def _send(self, frame: Frame) -> None:
        pass


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
            import pyvirtualcam
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


def parse_size(text: str, what: str = "--output-size") -> tuple[int, int]:
    """"1280x720" -> (1280, 720); width and height even, 16..8192."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ConfigError(f"{what} takes WIDTHxHEIGHT, e.g. 1280x720; got {text!r}") from e
    if not (16 <= w <= 8192 and 16 <= h <= 8192) or w % 2 or h % 2:
        raise ConfigError(f"{what} must be even numbers in 16..8192 (video encoders need even sizes); got {w}x{h}")
    return w, h


def parse_bitrate(text: str | int) -> int:
    """"4M", "2500k" or 4000000 -> bits/s, 100 kbit/s .. 100 Mbit/s."""
    s = str(text).strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(s[-1:], 1)
    try:
        value = round(float(s[:-1] if mult > 1 else s) * mult)
    except ValueError as e:
        raise ConfigError(f"bitrate takes bits/s like 4M or 2500k; got {text!r}") from e
    if not 100_000 <= value <= 100_000_000:
        raise ConfigError(f"bitrate must be 100k..100M bits/s; got {text!r}")
    return value


def _registered_backends() -> list[str]:
    from pyvirtualcam.camera import BACKENDS

    return list(BACKENDS)


def open_sink(
    spec: str, *, width: int, height: int, fps: float = 30.0, output_size: tuple[int, int] | None = None,
    output_fps: float | None = None, bitrate: int | None = None, fit_mode: str = "letterbox",
    on_quit: Callable[[], None] | None = None, on_bypass: Callable[[], None] | None = None,
) -> Sink:
    """Build (not start) the sink a `--sink` value names.

    Args:
        spec: virtualcam[:BACKEND[:DEVICE]] | virtualcam:/dev/videoN | udp://HOST:PORT |
            file:PATH | preview | null, optionally followed by ?size=WxH&fps=N&bitrate=4M&fit=MODE
            (these override the keyword defaults for this sink only).
        width, height: the engine size (pixels); udp, file and preview default to it.
        fps: the source rate; the default output rate (frames/s, 1..240).
        output_size: (width, height) for every sink; None: 1280x720 for virtualcam, else engine size.
        output_fps: output rate for every sink instead of `fps`.
        bitrate: bits/s for udp (default 4 Mbit/s) and file (default: constant quality, CRF 20).
        fit_mode: framing of the engine image to the output size: letterbox, crop or stretch.
        on_quit, on_bypass: preview keys q / space (called from the preview's thread).
    """
    base, _, query = spec.partition("?")
    opts = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    unknown = set(opts) - {"size", "fps", "bitrate", "fit", "codec"}
    kind, _, arg = base.partition(":")
    if unknown or ("codec" in opts and kind not in ("udp", "file")):
        bad = sorted(unknown)[0] if unknown else "codec"
        raise ConfigError(f"unknown option {bad!r} for sink {spec!r}; use size, fps, bitrate, fit (udp, file: codec)")
    size = parse_size(opts["size"], f"size in {spec!r}") if "size" in opts else output_size
    w, h = size or (VIRTUALCAM_SIZE if kind == "virtualcam" else (width, height))
    rate = output_fps or fps
    if "fps" in opts:
        try:
            rate = float(opts["fps"])
        except ValueError as e:
            raise ConfigError(f"fps in {spec!r} must be a number; got {opts['fps']!r}") from e
    if not 1 <= rate <= 240:
        raise ConfigError(f"output fps must be 1..240; got {rate}")
    rate_bits = parse_bitrate(opts["bitrate"]) if "bitrate" in opts else bitrate
    fit_mode = check_fit_mode(opts.get("fit", fit_mode), "fit")
    if kind in ("virtualcam", "udp", "file") and (w % 2 or h % 2):
        raise ConfigError(f"{kind} sink needs an even output size; got {w}x{h}: pass ?size= or --output-size")
    if kind == "null":
        return NullSink(w, h, rate)
    from dreamcam.sinks.encoders import FileSink, UdpSink

    if kind == "virtualcam":
        backend, _, device = arg.partition(":")
        if backend.startswith("/"):
            backend, device = "", arg
        if backend and backend not in _registered_backends():
            raise ConfigError(f"unknown virtual camera backend {backend!r}; here: {', '.join(_registered_backends()) or 'none'}")
        return VirtualCamSink(w, h, rate, backend=backend or None, device=device or None, fit_mode=fit_mode)
    if kind == "udp":
        url = urlsplit(base)
        try:
            port = url.port
        except ValueError as e:
            raise ConfigError(f"udp sink port must be 1..65535: {spec!r}") from e
        if not url.hostname or not port or url.path not in ("", "/"):
            raise ConfigError(f"udp sink takes udp://HOST:PORT, e.g. udp://127.0.0.1:5000; got {spec!r}")
        return UdpSink(url.hostname, port, w, h, rate, bitrate=rate_bits, codec=opts.get("codec", "auto"), fit_mode=fit_mode)
    if kind == "file":
        if not arg:
            raise ConfigError("file sink needs a path: --sink file:out.mp4")
        return FileSink(os.path.expanduser(arg), w, h, rate, bitrate=rate_bits, codec=opts.get("codec", "auto"), fit_mode=fit_mode)
    if kind == "preview":
        from dreamcam.sinks.preview import PreviewSink

        return PreviewSink(w, h, rate, on_quit=on_quit, on_bypass=on_bypass, fit_mode=fit_mode)
    raise ConfigError(f"unknown sink {spec!r}; use virtualcam[:BACKEND], udp://HOST:PORT, file:PATH, preview or null")


def frame_of(image: np.ndarray, like: Frame) -> Frame:
    """A new frame carrying `like`'s capture time and index."""
    return Frame(image, like.t_capture, like.index)
