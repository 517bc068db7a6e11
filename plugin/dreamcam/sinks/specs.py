"""`--sink` values: parsing a spec (virtualcam, udp://HOST:PORT, file:PATH, ...) into the sink it
names, built but not started."""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from dreamcam.errors import ConfigError
from dreamcam.frames import check_fit_mode
from dreamcam.sinks.base import NullSink, Sink, parse_bitrate, parse_size
from dreamcam.sinks.file import FileSink
from dreamcam.sinks.preview import PreviewSink
from dreamcam.sinks.udp import UdpSink
from dreamcam.sinks.virtualcam import VIRTUALCAM_SIZE, VirtualCamSink, registered_backends

SINK_SPECS = "virtualcam[:BACKEND], udp://HOST:PORT, file:PATH, preview or null"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v")


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
    if kind not in ("virtualcam", "udp", "file", "preview", "null"):
        raise ConfigError(unknown_sink(spec))
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
    if kind == "virtualcam":
        backend, _, device = arg.partition(":")
        if backend.startswith("/"):
            backend, device = "", arg
        if backend and backend not in registered_backends():
            raise ConfigError(f"unknown virtual camera backend {backend!r}; here: {', '.join(registered_backends()) or 'none'}")
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
    return PreviewSink(w, h, rate, on_quit=on_quit, on_bypass=on_bypass, fit_mode=fit_mode)


def check_distinct_recordings(specs: list[str], sinks: list[Sink]) -> None:
    """Refuse two file sinks that record to the same file (the same path after resolving `..`
    and symbolic links, or two names of one existing file): one recording would overwrite the
    other. Said before any output opens (ConfigError)."""
    seen: dict[str, str] = {}
    for spec, sink in zip(specs, sinks):
        if not isinstance(sink, FileSink):
            continue
        real = os.path.realpath(sink.path)
        same = next((other for path, other in seen.items() if path == real or _same_existing_file(path, real)), None)
        if same is not None:
            raise ConfigError(f"--sink {same} and --sink {spec} both record to {real}, and one would overwrite the other; "
                              "give each recording its own file")
        seen[real] = spec


def _same_existing_file(a: str, b: str) -> bool:
    """Hard links: two paths of one file that exists already."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is not there yet: then only equal paths are the same file
        return False


def unknown_sink(spec: str) -> str:
    """The message for a `--sink` of no known kind; a bare path is told to write file:PATH
    (a video device path, virtualcam:PATH)."""
    path = spec.partition("?")[0]
    if path.startswith("/dev/video"):
        return f"unknown sink {spec!r}: to send to that virtual camera write --sink virtualcam:{path}"
    if os.sep in path or "/" in path or path.lower().endswith(VIDEO_SUFFIXES) or path.startswith("~"):
        return f"unknown sink {spec!r}: to record to a file write --sink file:{spec}"
    return f"unknown sink {spec!r}; use {SINK_SPECS}"
