"""Cost and effect of cached attention (attn_bank / attn_refresh / attn_fusion), eager engine.

A still synthetic scene with fresh camera noise on every frame, then a cut to another scene.
For each bank size it reports: ms per frame (min and median, bank sizes interleaved), the mean frame-to-frame
change of the output on the still part (uint8 levels, lower = steadier), and after the cut how
far the output is from what the engine without the bank makes (the new content must show:
this stays near the still-part change, not near the size of the cut).

    PYTHONPATH=plugin OMP_NUM_THREADS=1 python tools/attention_bench.py --model tiny --size 512
    PYTHONPATH=plugin OMP_NUM_THREADS=1 python tools/attention_bench.py --model toy --size 128 --fusion 0.5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def scene(size: int, seed: int) -> np.ndarray:
    """A smooth still picture: gradients and a few discs (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x, y, 1 - x * y], axis=-1) * 200 + 20
    for _ in range(6):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return img


def frames(size: int, n: int, cut: int, noise: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    a, b = scene(size, seed), scene(size, seed + 7)
    return [np.clip((a if k < cut else b) + rng.normal(0, noise, a.shape), 0, 255).astype(np.uint8) for k in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="tiny or toy (load_pipeline), or arch:sd-turbo (random weights, "
                   "the real shapes: for the cost only)")
    p.add_argument("--cost-only", action="store_true", help="skip the still/cut measurement")
    p.add_argument("--no-cost", action="store_true", help="skip the timing")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, default=36)
    p.add_argument("--cut", type=int, default=28, help="frame index of the scene cut")
    p.add_argument("--banks", default="0,1,2,4")
    p.add_argument("--refresh", type=int, default=1)
    p.add_argument("--fusion", type=float, default=0.0)
    p.add_argument("--noise", type=float, default=6.0, help="camera noise, std in uint8 levels")
    p.add_argument("--t-index-list", default="18", help="default: 1 step at strength 0.4, as dreamcam run starts")
    p.add_argument("--cfg", default="none")
    p.add_argument("--prompt", default="a watercolor painting")
    p.add_argument("--repeats", type=int, default=12, help="timed frames per bank size")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    from dreamcam import StreamEngine, load_pipeline

    if args.model.startswith("arch:"):
        from dreamcam.models.archs import arch_pipeline

        pipe = arch_pipeline(args.model[5:], dtype=torch.float32)
    else:
        pipe = load_pipeline(args.model, device="cpu", dtype=torch.float32, progress=False)
    clip = frames(args.size, args.frames, args.cut, args.noise)
    t_index = [int(t) for t in args.t_index_list.split(",")]
    rows, outs = [], {}
    for bank in (int(b) for b in args.banks.split(",")):
        if args.cost_only:
            rows.append({"attn_bank": bank})
            continue
        e = StreamEngine(pipe, t_index, args.size, args.size, cfg_type=args.cfg, device="cpu", dtype=torch.float32)
        e.prepare(args.prompt, seed=2)
        e.set_attn_refresh(args.refresh)
        e.set_attn_fusion(args.fusion)
        e.set_attn_bank(bank)
        out = [e.img2img(f).astype(np.float32) for f in clip]
        e.set_attn_bank(0)
        outs[bank] = out
        still = [np.abs(out[k] - out[k - 1]).mean() for k in range(4, args.cut)]
        rows.append({"attn_bank": bank, "still_change": round(float(np.mean(still)), 4)})
        print(f"attn_bank {bank}: still frame-to-frame change {rows[-1]['still_change']} levels", flush=True)

    if args.no_cost:
        args.repeats = 0
    # cost: one engine, the bank sizes interleaved frame by frame (a shared machine's load hits all alike)
    banks = [row["attn_bank"] for row in rows]
    e = StreamEngine(pipe, t_index, args.size, args.size, cfg_type=args.cfg, device="cpu", dtype=torch.float32)
    e.prepare(args.prompt, seed=2)
    e.set_attn_fusion(args.fusion)
    ms: dict[int, list[float]] = {b: [] for b in banks}
    for rep in range(args.repeats + 1 if args.repeats else 0):
        for b in banks:
            e.set_attn_bank(b)
            e.img2img(clip[0])  # the bank fills (a reset at each change), untimed
            t0 = time.perf_counter()
            e.img2img(clip[1])
            if rep:
                ms[b].append(1000 * (time.perf_counter() - t0))
    e.set_attn_bank(0)
    for row in rows:
        t = ms[row["attn_bank"]]
        if not t:
            continue
        row["ms_per_frame_min"], row["ms_per_frame_median"] = round(min(t), 1), round(statistics.median(t), 1)
        print(f"attn_bank {row['attn_bank']}: {row['ms_per_frame_min']} ms/frame (min), "
              f"{row['ms_per_frame_median']} (median) over {args.repeats}", flush=True)
    if args.cost_only:
        print(json.dumps(rows) if args.json else "")
        return
    ref = outs[min(outs)]
    cut_size = float(np.abs(ref[args.cut] - ref[args.cut - 1]).mean())
    for row in rows:
        after = outs[row["attn_bank"]][args.cut: args.cut + 4]
        row["after_cut_vs_no_bank"] = [round(float(np.abs(a - r).mean()), 3) for a, r in zip(after, ref[args.cut:])]
        row["cut_size"] = round(cut_size, 3)
    if args.json:
        print(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    else:
        print(f"cut: output changes by {cut_size:.2f} levels; distance from the no-bank output on the 4 frames after it:")
        for row in rows:
            print(f"  attn_bank {row['attn_bank']}: {row['after_cut_vs_no_bank']}")


if __name__ == "__main__":
    main()
