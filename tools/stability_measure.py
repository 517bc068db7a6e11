"""Flicker, speed, input likeness and cut response of the `stability` knob (smoothing + motion guard) and of feedback.

    PYTHONPATH=plugin python tools/stability_measure.py --model tiny --size 512 --stability 0,0.5,0.8
    PYTHONPATH=plugin python tools/stability_measure.py --model toy --size 128

The clip (`clip`): a still scene with camera noise (Gaussian, sigma 6/255 per pixel, new every
frame) for --still frames, then a hard cut to another scene with the same noise for --after
frames. Measured per stability value, same engine, seed and clip:

- flicker: the warping error over the still part, mean |out_k - warp(out_{k-1})| in 0..255 units;
  the scene does not move, so the warp is the identity and every pixel is non-occluded;
- ratio: flicker / flicker at stability 0 (the issue's bar: at most 0.6 at stability 0.8);
- fps: frames per second of the frame step alone on this machine (the bar: at least 0.75x stability 0's);
- corr: Pearson correlation of the output's grey with the input's grey, mean over the still part
  (the output still follows the input);
- cut_frames: frames after the cut until the output's correlation with the new scene reaches 90%
  of where it settles (its mean over the last 4 frames); 0 = the first frame after the cut (the
  bar: within a second of frames);
- ghost: correlation of the first output after the cut with the old scene, minus stability 0's.

`--feedback 0,0.4` measures the feedback knob instead (with the guard at 0.5, or --guard);
`--mode raw` blends the noisy start latent as the livepeer fork does (docs/stability.md compares).
`dreamcam bench --flicker` measures the same on a video clip through the live loop, with the
flicker meter (docs/flicker.md).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from dreamcam import StreamEngine, load_pipeline, tiny_pipeline
from dreamcam.engine.stability import stability_parts


def scene(size: int, seed: int) -> np.ndarray:
    """A smooth synthetic scene (gradients, discs, stripes), uint8 (size, size, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0, 1)) + c)
                    for c in (0, 2, 4)], -1) * 0.6
    for _ in range(6):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
        img[disc] = rng.uniform(0, 1, 3)
    return (img.clip(0, 1) * 255).astype(np.uint8)


def clip(size: int, still: int, after: int, sigma: float = 6.0, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Frames of scene A with camera noise, then a cut to scene B; returns (frames, A, B)."""
    rng = np.random.default_rng(seed + 100)
    a, b = scene(size, seed), scene(size, seed + 1)
    frames = [(base + rng.normal(0, sigma, base.shape)).clip(0, 255).astype(np.uint8)
              for base in [a] * still + [b] * after]
    return frames, a, b


def grey(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64).mean(-1).ravel()


def corr(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(grey(x), grey(y))[0, 1])


def measure(pipe, size: int, strength: float, settings: list[tuple[float, dict]], still: int, after: int,
            mode: str, prompt: str, seed: int = 2) -> list[dict]:
    """settings: (stability, parts) pairs, the first the reference. The engines take the clip's
    frames in turn (frame k on every engine, then frame k+1), so a busy shared CPU slows all alike."""
    frames, a, b = clip(size, still, after)
    engines = []
    for _, parts in settings:
        engine = StreamEngine(pipe, [35], size, size, cfg_type="none", device="cpu", dtype=torch.float32)
        engine.prepare(prompt, seed=seed)
        engine.set_strength(strength)
        engine.latent_feedback.mode = mode
        for knob, value in parts.items():
            getattr(engine, f"set_{knob}")(value)
        engine.img2img(frames[0])  # warm-up frame (allocations), then the engine starts fresh
        engine.prepare(prompt, seed=seed)
        engines.append(engine)
    outs = [[] for _ in engines]
    secs = [0.0 for _ in engines]
    for f in frames:
        for i, engine in enumerate(engines):
            t0 = time.perf_counter()
            outs[i].append(engine.img2img(f))
            secs[i] += time.perf_counter() - t0
    rows, ref = [], None
    skip = 6  # the feedback ramps in over the first frames
    for (s, parts), o, t, engine in zip(settings, outs, secs, engines):
        diffs = [np.abs(o[k].astype(np.float64) - o[k - 1]).mean() for k in range(skip, still)]
        post = [corr(x, b) for x in o[still:]]
        row = {"stability": s, **parts, "mode": mode, "flicker": float(np.mean(diffs)), "fps": len(frames) / t,
               "corr": float(np.mean([corr(x, a) for x in o[skip:still]])), "post_corr": post,
               "ghost_old": corr(o[still], a)}
        if ref is None:
            ref = row
        target = 0.9 * float(np.mean(post[-4:]))  # 90% of where this setting settles on the new scene
        row["cut_frames"] = next((k for k, c in enumerate(post) if c >= target), None)
        row["ratio"] = row["flicker"] / ref["flicker"]
        row["fps_ratio"] = row["fps"] / ref["fps"]
        row["ghost"] = row["ghost_old"] - ref["ghost_old"]
        rows.append(row)
        knobs = ", ".join(f"{k} {v:g}" for k, v in parts.items())
        print(f"stability {s:.2f} ({knobs}, {mode}): "
              f"flicker {row['flicker']:.3f} ({row['ratio']:.2f}x)  fps {row['fps']:.1f} ({row['fps_ratio']:.2f}x)  "
              f"corr {row['corr']:.3f}  cut {row['cut_frames']} frames  ghost {row['ghost']:+.3f}", flush=True)
    return rows


def op_cost(size: int, reps: int = 300) -> dict:
    """Milliseconds per frame of the motion check and of the blend + keep alone, on this CPU (one thread)."""
    from dreamcam.engine.feedback import LatentFeedback

    fb = LatentFeedback(1, (4, size // 8, size // 8), torch.device("cpu"), torch.float32)
    fb.set_value(0.5)
    fb.set_smoothing(0.5)  # both parts: the blend's whole cost
    fb.set_guard(0.5)
    x = torch.rand(1, 3, size, size) * 2 - 1
    lat = torch.randn(1, 4, size // 8, size // 8)
    a, b = torch.full((1, 1, 1), 0.7), torch.full((1, 1, 1), 0.7)
    out = {}
    for name, fn in (("motion_ms", lambda: fb.check_motion(x)), ("blend_ms", lambda: fb.keep(fb.blend(lat, a, b, lat)))):
        for _ in range(20):
            fn()
        batches = []  # the fastest of 6 batches: a busy shared CPU only ever adds time
        for _ in range(6):
            t0 = time.perf_counter()
            for _ in range(reps // 6):
                fn()
            batches.append((time.perf_counter() - t0) / (reps // 6) * 1e3)
        out[name] = min(batches)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="tiny (random weights) or a load_pipeline name, e.g. toy")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--stability", default="0,0.5,0.8", help="comma-separated values")
    p.add_argument("--still", type=int, default=24)
    p.add_argument("--after", type=int, default=16)
    p.add_argument("--mode", default="renoised", choices=("renoised", "raw"))
    p.add_argument("--guard", type=float, default=None, help="motion_guard instead of stability's part")
    p.add_argument("--feedback", default=None, help="comma-separated feedback values instead of --stability")
    p.add_argument("--prompt", default="a watercolor painting")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args()
    torch.set_num_threads(1)
    pipe = tiny_pipeline(seed=0) if args.model == "tiny" else load_pipeline(args.model, device="cpu", dtype=torch.float32)
    cost = op_cost(args.size)
    print(f"ops at {args.size}: motion check {cost['motion_ms']:.3f} ms, blend+keep {cost['blend_ms']:.3f} ms", flush=True)
    if args.feedback:  # expert values instead of stability's parts (stability column: the feedback)
        settings = [(float(v), {"feedback": float(v), "motion_guard": args.guard if args.guard is not None else 0.5})
                    for v in args.feedback.split(",")]
    else:
        settings = [(float(v), stability_parts(float(v))) for v in args.stability.split(",")]
        if args.guard is not None:
            settings = [(s, {**parts, "motion_guard": args.guard}) for s, parts in settings]
    rows = measure(pipe, args.size, args.strength, settings, args.still, args.after, args.mode, args.prompt)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "ops": cost, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
