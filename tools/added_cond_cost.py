"""What SDXL's added conditioning costs per UNet call on this machine: the UNet's added-embedding
path alone (`get_aug_embed`: the time ids' sinusoidal embedding and two linear layers on the
pooled text embedding) against the whole UNet call, on the offline tiny SDXL, one CPU thread.

    PYTHONPATH=plugin python tools/added_cond_cost.py [--size 512]
"""

from __future__ import annotations

import argparse
import time

import torch

from dreamcam import StreamEngine, tiny_pipeline


def _ms(fn, n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1000


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="engine width and height in pixels")
    size = ap.parse_args().size
    torch.set_num_threads(1)
    pipe = tiny_pipeline(0, arch="sdxl")
    engine = StreamEngine(pipe, [29], size, size, cfg_type="self", device="cpu", dtype=torch.float32)
    engine.prepare("a photo of a cat")
    unet, kw = pipe.unet, engine.unet_conditioning
    x, t = torch.randn(1, 4, size // 8, size // 8), torch.tensor([500])
    emb = unet.time_embedding(unet.time_proj(t))
    added = _ms(lambda: unet.get_aug_embed(emb=emb, encoder_hidden_states=kw["encoder_hidden_states"],
                                           added_cond_kwargs=kw["added_cond_kwargs"]), 500)
    whole = _ms(lambda: unet(x, t, **kw), 5)
    print(f"tiny-sdxl {size}x{size}, 1 thread: added-conditioning path {added:.3f} ms of a {whole:.1f} ms UNet call "
          f"({100 * added / whole:.2f} %)")


if __name__ == "__main__":
    main()
