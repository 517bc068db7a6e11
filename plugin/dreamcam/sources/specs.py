"""`--source` values: parsing a spec (webcam:0, screen:1, file:clip.mp4, ...) into the capture
source it names, built but not started."""

from __future__ import annotations

import os

from dreamcam.errors import ConfigError
from dreamcam.sources.base import Source
from dreamcam.sources.file import VideoFileSource
from dreamcam.sources.image import ImageSource
from dreamcam.sources.screen import ScreenSource, parse_region
from dreamcam.sources.testpattern import TestPatternSource
from dreamcam.sources.webcam import WebcamSource

SOURCE_SPECS = "webcam[:N | :/dev/videoN], screen[:MONITOR | :X,Y,W,H], file:PATH, image:PATH or testpattern"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v", ".gif")


def open_source(
    spec: str,
    *,
    width: int = 1280,
    height: int = 720,
    fps: float | None = None,
    mirror: bool = False,
    fourcc: str | None = None,
) -> Source:
    """Build (not start) the source a `--source` value names.

    Args:
        spec: webcam[:N | :/dev/videoN], screen[:MONITOR | :X,Y,W,H], file:PATH, image:PATH,
            testpattern.
        width, height: requested camera size / test-pattern size (pixels); screen, file and
            image sources keep their own size (the runner frames it).
        fps: capture rate (frames/s): requested from a camera; the pace of screen (default 30),
            image (default 30) and test pattern (default 30); a file plays at its own rate
            unless this is given.
        mirror: flip frames left-right.
        fourcc: camera pixel format, e.g. "MJPG".
    """
    kind, _, arg = spec.partition(":")
    if fps is not None and not fps > 0:  # 0 would otherwise read as "the default"
        raise ConfigError(f"--fps must be > 0 frames/s, got {fps}; leave it out for the source's own rate")
    if kind == "testpattern" and not arg:
        return TestPatternSource(width, height, fps=fps or 30.0, mirror=mirror)
    if kind == "webcam":
        if arg and not arg.isdigit() and "/" not in arg and not os.path.exists(arg):
            raise ConfigError(
                f"webcam takes a camera number or a device path, got {spec!r}; e.g. webcam:0 or webcam:/dev/video2 "
                "(list them with `dreamcam devices`)"
            )
        device: int | str = int(arg) if arg.isdigit() else (arg or 0)
        return WebcamSource(device, width=width, height=height, fps=fps, fourcc=fourcc, mirror=mirror)
    if kind == "screen":
        if "," in arg:
            return ScreenSource(region=parse_region(arg), fps=fps or 30.0, mirror=mirror)
        if arg and not arg.isdigit():
            raise ConfigError(f"screen takes a monitor number or X,Y,W,H, got {spec!r}; e.g. screen:1 or screen:0,0,1280,720")
        return ScreenSource(int(arg) if arg else 1, fps=fps or 30.0, mirror=mirror)
    if kind in ("file", "image"):
        if not arg:
            raise ConfigError(f"{kind} needs a path, e.g. {kind}:clip.mp4" if kind == "file" else f"{kind} needs a path, e.g. image:photo.jpg")
        path = os.path.expanduser(arg)  # no shell expands ~ after "file:" (cmd.exe and PowerShell never do)
        if kind == "file":
            return VideoFileSource(path, fps=fps, mirror=mirror)
        return ImageSource(path, fps=fps or 30.0, mirror=mirror)
    raise ConfigError(unknown_source(spec))


def unknown_source(spec: str) -> str:
    """The message for a `--source` of no known kind; a bare path is told to write file:PATH
    (image:PATH for a picture, webcam:PATH for a video device)."""
    if spec.startswith("/dev/video"):
        return f"unknown source {spec!r}: to use that camera write --source webcam:{spec}"
    lower = spec.lower()
    if lower.endswith(IMAGE_SUFFIXES):
        return f"unknown source {spec!r}: to use a picture write --source image:{spec}"
    if os.sep in spec or "/" in spec or spec.startswith("~") or lower.endswith(VIDEO_SUFFIXES) or os.path.isfile(spec):
        return f"unknown source {spec!r}: to play a video file write --source file:{spec}"
    return f"unknown source {spec!r}; use {SOURCE_SPECS}"
