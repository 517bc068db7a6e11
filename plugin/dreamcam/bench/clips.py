"""Test clips for flicker measurements: a still scene with camera noise, then a cut to another.

A real camera never gives two equal frames, even of a still scene: every pixel carries fresh
sensor noise each frame, and img2img turns that noise into flicker. This clip is that case,
reproducible: scene A (shapes, gradients, fine texture) held still for `still_s` seconds, a hard
cut, scene B for `after_s` seconds; each frame gets its own sensor-like noise (Gaussian, its
variance growing with the brightness as a sensor's shot noise does: `noise` is the standard
deviation at mid grey, in grey levels 0..255). `pan` moves the view by that many pixels a frame
(0: a tripod shot).

Write one (`dreamcam bench --flicker` makes one itself when no `--source` is given):

    python -m dreamcam.bench.clips still_then_cut.mp4 --size 512x512 --noise 4
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np

from dreamcam.errors import ConfigError, DeviceError, DreamcamError

MARGIN = 64  # scene pixels beyond the frame on each side, room for `pan`


@dataclass(frozen=True)
class ClipSpec:
    """What a test clip holds: size (pixels), rate (frames/s), the seconds of each scene,
    noise (grey levels at mid grey), pan (pixels a frame) and the seed of scenes and noise."""

    width: int = 512
    height: int = 512
    fps: float = 30.0
    still_s: float = 3.0
    after_s: float = 2.0
    noise: float = 4.0
    pan: float = 0.0
    seed: int = 0

    @property
    def cut_at(self) -> int:
        """Index of the first frame of scene B (the pair cut_at - 1, cut_at spans the cut)."""
        return round(self.still_s * self.fps)

    @property
    def frames(self) -> int:
        return self.cut_at + round(self.after_s * self.fps)

    def check(self) -> ClipSpec:
        if self.width < 16 or self.height < 16:
            raise ConfigError(f"clip size must be at least 16x16, got {self.width}x{self.height}")
        if not self.fps > 0 or self.still_s < 0 or self.after_s < 0 or self.frames < 2:
            raise ConfigError(f"a clip needs fps > 0 and at least 2 frames; got fps {self.fps}, "
                              f"{self.still_s} s then {self.after_s} s")
        if self.noise < 0:
            raise ConfigError(f"clip noise is a standard deviation in grey levels, >= 0; got {self.noise}")
        return self


def scene(width: int, height: int, seed: int) -> np.ndarray:
    """A still picture with something for optical flow to hold on to: a smooth colour gradient,
    soft blobs, hard-edged shapes and a fine texture. float32 (H, W, 3), 0..255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    t = (x * rng.uniform(0.3, 1.0) + y * rng.uniform(0.3, 1.0)) / (width + height)
    img = (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.float32)
    for _ in range(6):  # soft light and shade
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.1, 0.3) * max(width, height)
        img += (rng.uniform(-60, 60, 3) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None])
    img += 10 * np.sin(x / rng.uniform(3, 7))[..., None] * np.sin(y / rng.uniform(3, 7))[..., None]  # cloth, foliage
    side = min(width, height)
    for _ in range(10):  # objects with edges
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        size = int(rng.uniform(0.04, 0.15) * side)
        if rng.random() < 0.5:
            cv2.circle(img, (cx, cy), size, colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (cx - size, cy - size // 2), (cx + size, cy + size // 2), colour, -1, cv2.LINE_AA)
    return np.clip(img, 0, 255)


def sensor_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """`image` (float, 0..255) plus one frame of sensor-like noise, as uint8: Gaussian per pixel and
    channel, variance sigma^2 (0.2 + 0.8 x / 128) at brightness x (read noise plus shot noise)."""
    if sigma <= 0:
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)
    std = sigma * np.sqrt(0.2 + 0.8 * image / 128.0)
    return np.clip(image + std * rng.standard_normal(image.shape, dtype=np.float32) + 0.5, 0, 255).astype(np.uint8)


def clip_frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    """The clip's frames, uint8 (H, W, 3) RGB, in order."""
    spec.check()
    w, h = spec.width, spec.height
    reach = int(np.ceil(abs(spec.pan) * spec.frames)) + 1
    big = (w + 2 * MARGIN + reach, h + 2 * MARGIN)
    scenes = [scene(*big, spec.seed * 2 + 1), scene(*big, spec.seed * 2 + 2)]
    rng = np.random.default_rng(spec.seed + 1000)
    for i in range(spec.frames):
        src = scenes[0] if i < spec.cut_at else scenes[1]
        dx = MARGIN + (spec.pan * i if spec.pan >= 0 else reach + spec.pan * i)
        shift = np.float32([[1, 0, -dx], [0, 1, -MARGIN]])  # sub-pixel pan: the view moves right by pan a frame
        view = cv2.warpAffine(src, shift, (w, h), flags=cv2.INTER_LINEAR)
        yield sensor_noise(view, spec.noise, rng)


def write_clip(path: str, spec: ClipSpec = ClipSpec(), *, lossless: bool = False, crf: int = 10) -> ClipSpec:
    """Write the clip to `path` (any container FFmpeg writes: .mp4, .mkv, .mov) with PyAV.

    H.264 (libx264, yuv420p, `crf`; the low default keeps the noise) where PyAV has it, else
    MPEG-4 part 2; lossless: FFV1 with RGB kept exactly (use .mkv), for measurements that must
    see the very pixels generated. Returns the spec (`cut_at`: the first frame after the cut)."""
    import av  # noqa: PLC0415 - PyAV loads FFmpeg: only when a clip is written

    spec.check()
    try:
        container = av.open(path, "w")
    except (OSError, av.FFmpegError) as e:
        raise DeviceError(f"cannot write clip {path}: {e}; choose a writable path with a video extension (.mp4, .mkv)") from e
    rate = Fraction(spec.fps).limit_denominator(1001)
    with container:
        if lossless:
            stream = container.add_stream("ffv1", rate=rate)
            stream.pix_fmt, fmt = "bgr0", "rgb24"
        elif "libx264" in av.codecs_available:
            stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": "medium"})
            stream.pix_fmt, fmt = "yuv420p", "rgb24"
        else:
            stream = container.add_stream("mpeg4", rate=rate, options={"qscale": "2"})
            stream.pix_fmt, fmt = "yuv420p", "rgb24"
        stream.width, stream.height = spec.width, spec.height
        for image in clip_frames(spec):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format=fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return spec


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size is WxH, e.g. 512x512; got {text!r}") from None
    return w, h


def main(argv: list[str] | None = None) -> int:
    """`python -m dreamcam.bench.clips OUT [options]`: write a test clip."""
    p = argparse.ArgumentParser(prog="python -m dreamcam.bench.clips", description=__doc__.splitlines()[0])
    d = ClipSpec()
    p.add_argument("out", help="video file to write (.mp4; .mkv with --lossless)")
    p.add_argument("--size", type=_size, default=(d.width, d.height), help="WxH (default 512x512)")
    p.add_argument("--fps", type=float, default=d.fps, help=f"frames per second (default {d.fps:g})")
    p.add_argument("--still", type=float, default=d.still_s, help=f"seconds of the first scene (default {d.still_s:g})")
    p.add_argument("--after", type=float, default=d.after_s, help=f"seconds after the cut (default {d.after_s:g})")
    p.add_argument("--noise", type=float, default=d.noise, help=f"sensor noise, grey levels at mid grey (default {d.noise:g})")
    p.add_argument("--pan", type=float, default=d.pan, help="camera pan, pixels a frame (default 0: still)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--lossless", action="store_true", help="FFV1, exact RGB (use a .mkv name)")
    args = p.parse_args(argv)
    spec = ClipSpec(*args.size, fps=args.fps, still_s=args.still, after_s=args.after, noise=args.noise,
                    pan=args.pan, seed=args.seed)
    try:
        write_clip(args.out, spec, lossless=args.lossless)
    except DreamcamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {spec.frames} frames {spec.width}x{spec.height} at {spec.fps:g} fps, cut before frame {spec.cut_at}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
