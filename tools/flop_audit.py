"""FLOPs of dreamcam's frame step against its minimum (UNet on the stream batch + one TAESD encode
and decode), counted with torch's FlopCounterMode on the CPU (random weights, fp32).

    PYTHONPATH=plugin python tools/flop_audit.py sd-turbo 512 512 35 none
    PYTHONPATH=plugin python tools/flop_audit.py sd15 512 512 0,16,32,45 self

Arguments: architecture (sd-turbo, sd15), width, height, t_index_list, cfg_type. The counter
does not see the CPU's fused attention kernel, so both sides leave attention out alike.
"""

from __future__ import annotations

import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from dreamcam.models.archs import arch_pipeline
from dreamcam.backends.compiled.step import DeviceFrameStep
from dreamcam.engine.stream import StreamEngine


def gflop(fn) -> tuple[float, dict[str, float]]:
    with FlopCounterMode(display=False) as counter:
        fn()
    by_op = {str(op): n / 1e9 for op, n in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops() / 1e9, by_op


@torch.no_grad()
def main(arch: str, width: int, height: int, t_index_list: list[int], cfg_type: str) -> None:
    torch.set_num_threads(1)
    pipe = arch_pipeline(arch, seed=0, device="cpu", dtype=torch.float32)
    engine = StreamEngine(pipe, t_index_list, width, height, cfg_type=cfg_type, device="cpu", dtype=torch.float32)
    engine.prepare("a photo of a cat", num_inference_steps=50, guidance_scale=1.4, seed=2)
    step = DeviceFrameStep(engine)
    step.frames_in.random_(0, 255)
    total, by_op = gflop(step)

    # the minimum: the UNet once on the stream batch (doubled for cfg "full"), TAESD once each way
    batch = len(t_index_list) * (2 if cfg_type == "full" else 1)
    latents = torch.randn(batch, 4, height // 8, width // 8)
    embeds = engine.prompt_embeds[:1].repeat(batch, 1, 1)
    unet, _ = gflop(lambda: pipe.unet(latents, torch.full((batch,), 500), encoder_hidden_states=embeds))
    vae, _ = gflop(lambda: (pipe.vae.encoder(torch.randn(1, 3, height, width)),
                            pipe.vae.decoder(torch.randn(1, 4, height // 8, width // 8))))
    print(f"{arch} {width}x{height} t_index_list={t_index_list} cfg={cfg_type}")
    print(f"  frame step: {total:.1f} GFLOP")
    print(f"  minimum:    {unet + vae:.1f} GFLOP = UNet (batch {batch}) {unet:.1f} + TAESD encode+decode {vae:.1f}")
    print("  by op:", ", ".join(f"{op} {n:.1f}" for op, n in sorted(by_op.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) != 5:
        sys.exit(__doc__)
    main(a[0], int(a[1]), int(a[2]), [int(x) for x in a[3].split(",")], a[4])
