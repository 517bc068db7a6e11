"""Train dreamcam's toy model: a tiny Stable-Diffusion-architecture pipeline whose output follows its input.

What it trains (all from procedurally drawn pictures: gradients, shapes, stripes, text, smooth
colour fields, noise and dreamcam's own test pattern; nothing is downloaded):

1. the VAE (diffusers `AutoencoderTiny`, 8x latent) to reconstruct its input: blurry, but colours
   and layout survive; the latent scale is measured and written as `scaling_factor`;
2. the text encoder (transformers `CLIPTextModel` on dreamcam's byte-level CLIP tokenizer) and
   the UNet (diffusers `UNet2DConditionModel`, epsilon prediction on the engine's scheduler:
   scaled_linear betas 0.00085..0.012, 1000 steps, LCM timesteps) together, so that the UNet
   denoises the latents and a few colour words steer the picture. The x0 target for a caption
   holding "red", "green", "blue", "warm", "cold", "gray"/"grey"/"black and white"/"monochrome"
   is the latent of the tinted input, weighted by the noise level (more noise = more tint, so
   strength scales the effect as with a real model); any other caption (or "") keeps the input.
   A quarter of each batch mixes two captions' embeddings and their tints, so prompt blends and
   cross-fades move smoothly between tints.

The result is a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/, float16 safetensors) that `dreamcam.load_pipeline("toy")` loads.

Rerun (about 12 minutes on 2 CPU cores; deterministic for a seed, progress on stderr):

    PYTHONPATH=plugin python tools/train_toy.py                      # writes plugin/dreamcam/models/toy
    PYTHONPATH=plugin python tools/train_toy.py --quick --out /tmp/toy   # a 2-minute smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugin"))

from dreamcam.models.pipelines import tiny_tokenizer  # noqa: E402
from dreamcam.models.pipelines import TOY_TINTS, toy_components  # noqa: E402
from dreamcam.sources.testpattern import TestPatternSource  # noqa: E402

POOL_SIZE = 128  # pictures are drawn at this size, then cropped / scaled to the training size


# ---------------------------------------------------------------------------------- pictures


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randrange(256) for _ in range(3))  # type: ignore[return-value]


def _background(rng: random.Random, n: int) -> np.ndarray:
    kind = rng.choice(["solid", "linear", "linear", "radial", "field", "field"])
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / (n - 1)
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    if kind == "solid":
        return np.broadcast_to(a, (n, n, 3)).copy()
    if kind == "linear":
        ang = rng.uniform(0, 2 * math.pi)
        s = (x - 0.5) * math.cos(ang) + (y - 0.5) * math.sin(ang)
        s = (s - s.min()) / max(1e-6, s.max() - s.min())
        return a + (b - a) * s[..., None]
    if kind == "radial":
        cx, cy = rng.random(), rng.random()
        s = np.clip(np.hypot(x - cx, y - cy) / rng.uniform(0.4, 1.2), 0, 1)
        return a + (b - a) * s[..., None]
    # a smooth random colour field, like the low frequencies of a photo
    k = rng.choice([2, 3, 4, 6])
    grid = np.array([[_colour(rng) for _ in range(k)] for _ in range(k)], np.uint8)
    return np.asarray(Image.fromarray(grid).resize((n, n), Image.BICUBIC), np.float32)


def _stripes(rng: random.Random, n: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    ang = rng.uniform(0, math.pi)
    period = rng.uniform(6, 40)
    s = np.sin((x * math.cos(ang) + y * math.sin(ang)) * 2 * math.pi / period)
    if rng.random() < 0.6:
        s = np.sign(s)
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    return a + (b - a) * (0.5 + 0.5 * s)[..., None]


def draw_picture(rng: random.Random, n: int = POOL_SIZE) -> np.ndarray:
    """One procedural RGB picture, uint8 (n, n, 3)."""
    kind = rng.random()
    if kind < 0.12:
        w, h = rng.choice([(160, 90), (128, 128), (96, 128), (200, 100)])
        frame = TestPatternSource(w, h, fps=None).pattern(rng.randrange(2000))
        img = Image.fromarray(frame).resize((n, n), Image.BILINEAR)
    else:
        base = _stripes(rng, n) if kind < 0.25 else _background(rng, n)
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.choice([0, 1, 2, 3, 4, 6, 8])):
        x0, y0 = rng.uniform(-0.2, 1.0) * n, rng.uniform(-0.2, 1.0) * n
        w, h = rng.uniform(0.08, 0.6) * n, rng.uniform(0.08, 0.6) * n
        box = [x0, y0, x0 + w, y0 + h]
        shape = rng.choice(["rect", "ellipse", "ellipse", "polygon", "line"])
        fill = _colour(rng)
        if shape == "rect":
            draw.rectangle(box, fill=fill)
        elif shape == "ellipse":
            draw.ellipse(box, fill=fill)
        elif shape == "polygon":
            draw.polygon([(rng.uniform(0, n), rng.uniform(0, n)) for _ in range(rng.choice([3, 4, 5]))], fill=fill)
        else:
            draw.line(box, fill=fill, width=rng.randrange(1, 8))
    if rng.random() < 0.3:
        font = ImageFont.load_default(size=rng.choice([10, 14, 20, 28]))
        words = ["dreamcam", "hello", "OBS", "LIVE", "42", "test", "abc", "XYZ", "camera"]
        draw.text((rng.uniform(0, 0.6) * n, rng.uniform(0, 0.8) * n), rng.choice(words), fill=_colour(rng), font=font)
    out = np.asarray(img, np.float32)
    if rng.random() < 0.25:  # camera-like noise
        out = out + np.random.default_rng(rng.randrange(2**31)).normal(0, rng.uniform(2, 14), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


class Pictures:
    """A pool of drawn pictures; batches are random crops / scales / flips of them, float [0, 1]."""

    def __init__(self, count: int, seed: int) -> None:
        rng = random.Random(seed)
        t0 = time.perf_counter()
        self.pool = torch.from_numpy(np.stack([draw_picture(rng) for _ in range(count)])).permute(0, 3, 1, 2)
        self.gen = torch.Generator().manual_seed(seed)
        log(f"drew {count} pictures in {time.perf_counter() - t0:.1f} s")

    def batch(self, n: int, size: int) -> torch.Tensor:
        idx = torch.randint(len(self.pool), (n,), generator=self.gen)
        x = self.pool[idx].float() / 255.0
        scale = int(torch.randint(size, POOL_SIZE + 1, (), generator=self.gen))
        if scale != POOL_SIZE:
            x = F.interpolate(x, size=(scale, scale), mode="bilinear", antialias=True, align_corners=False)
        oy, ox = (int(v) for v in torch.randint(scale - size + 1, (2,), generator=self.gen))
        x = x[:, :, oy : oy + size, ox : ox + size]
        if bool(torch.rand((), generator=self.gen) < 0.5):
            x = x.flip(-1)
        return x.clamp(0, 1).contiguous()


# ---------------------------------------------------------------------------------- tints and captions

NEUTRAL_CAPTIONS = [
    "", "a photo", "a portrait in the style of a watercolor painting", "a picture", "shapes", "stripes",
    "a test pattern", "a cat", "a city at night", "an oil painting", "a marble statue, museum light",
    "a neon city", "sharp", "a drawing", "the sea", "landscape", "dreamcam", "hello world", "a face",
]
TEMPLATES = ["{w}", "{w}", "a {w} picture", "{w} photo", "a portrait, {w}", "{w} tones", "a {w} city",
             "{w} style", "very {w}", "a cat, {w}", "{w} watercolor painting", "an image in {w}"]


def tint_matrices() -> dict[str, torch.Tensor]:
    """word -> (3, 4) affine colour transform on RGB in [0, 1] (last column: offset)."""
    lum = torch.tensor([0.299, 0.587, 0.114])
    out = {}
    for word, (colour, amount) in TOY_TINTS.items():
        c = torch.tensor(colour, dtype=torch.float32)
        c = c / float(lum @ c)  # keep the brightness
        m = (1 - amount) * torch.eye(3) + amount * torch.outer(c, lum)
        out[word] = torch.cat([m, torch.zeros(3, 1)], dim=1)
    return out


IDENTITY = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1)


def apply_tint(x: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """x (N, 3, H, W) in [0, 1], mats (N, 3, 4) -> tinted (N, 3, H, W), clamped."""
    y = torch.einsum("nij,njhw->nihw", mats[:, :, :3], x) + mats[:, :, 3, None, None]
    return y.clamp(0, 1)


def caption(rng: random.Random, words: list[str], tints: dict[str, torch.Tensor]) -> tuple[str, torch.Tensor]:
    if rng.random() < 0.3:
        return rng.choice(NEUTRAL_CAPTIONS), IDENTITY
    w = rng.choice(words)
    return rng.choice(TEMPLATES).format(w=w), tints[w]


# ---------------------------------------------------------------------------------- training


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def progress(stage: str, step: int, total: int, t0: float, loss: float) -> None:
    if step % 25 and step != total:
        return
    el = time.perf_counter() - t0
    eta = el / max(1, step) * (total - step)
    log(f"  {stage} {step:5d}/{total}  loss {loss:.4f}  {el:6.0f} s  eta {eta:4.0f} s")


def _pass_colour(conv: torch.nn.Conv2d, n: int, *, blur: bool, weight: float = 1.0, bias: float = 0.0) -> None:
    """conv copies its first n channels (3x3 box-blurred or as is), scaled, plus bias; the rest start at zero."""
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(n):
            if blur:
                conv.weight[c, c] = weight / 9.0
            else:
                conv.weight[c, c, 1, 1] = weight
        if conv.bias is not None:
            conv.bias.zero_()
            conv.bias[:n] = bias


def init_vae_as_blur(vae) -> None:
    """Start the TAESD-style VAE (ReLU, no norms: slow to learn from scratch) as a blur: the latent's
    first 3 channels hold the 8x8-averaged picture in [-1, 1] and the decoder scales it back up,
    so colours and layout are right from step 0 and training only adds the detail. Each residual
    block starts as the identity (its last conv zero; the colours it passes are >= 0)."""
    from diffusers.models.autoencoders.vae import AutoencoderTinyBlock

    for layers in (vae.encoder.layers, vae.decoder.layers):
        for m in layers:
            if isinstance(m, AutoencoderTinyBlock):
                with torch.no_grad():
                    m.conv[-1].weight.zero_()
                    if m.conv[-1].bias is not None:
                        m.conv[-1].bias.zero_()
    enc = [m for m in vae.encoder.layers if isinstance(m, torch.nn.Conv2d)]
    _pass_colour(enc[0], 3, blur=False)  # input in [0, 1] (EncoderTiny maps [-1, 1] there)
    for conv in enc[1:-1]:
        _pass_colour(conv, 3, blur=True)  # the stride-2 convs average
    _pass_colour(enc[-1], 3, blur=False, weight=2.0, bias=-1.0)  # latent in [-1, 1]
    dec = [m for m in vae.decoder.layers if isinstance(m, torch.nn.Conv2d)]
    _pass_colour(dec[0], 3, blur=False, weight=0.5, bias=0.5)  # back to [0, 1] (ReLU keeps it)
    for conv in dec[1:-1]:
        _pass_colour(conv, 3, blur=True)  # smooth each nearest-neighbour upsampling
    _pass_colour(dec[-1], 3, blur=False)  # DecoderTiny maps [0, 1] to [-1, 1]


def train_vae(vae, pics: Pictures, steps: int, batch: int, size: int) -> None:
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        x = pics.batch(batch, size) * 2 - 1
        z = vae.encoder(x)
        # a little latent noise: the decoder must also draw what an imperfect UNet hands it
        zn = z + 0.1 * torch.randn_like(z) if step % 2 else z
        y = vae.decoder(zn)
        rec = F.l1_loss(y, x) + F.mse_loss(y, x)
        # keep the latents near zero mean, unit spread (the diffusion schedule assumes about that)
        reg = z.mean(dim=(0, 2, 3)).pow(2).mean() + (z.std(dim=(0, 2, 3)) - 1).pow(2).mean()
        loss = rec + 0.02 * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        progress("vae ", step, steps, t0, rec.item())


def train_unet(unet, text_encoder, vae, tokenizer, pics: Pictures, steps: int, batch: int, seed: int) -> None:
    from diffusers import LCMScheduler

    rng = random.Random(seed + 1)
    gen = torch.Generator().manual_seed(seed + 2)
    tints = tint_matrices()
    words = sorted(tints)
    alphas = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod
    lcm_ts = torch.arange(19, 1000, 20)  # the 50-step LCM schedule the engine picks from
    sf = vae.config.scaling_factor
    head = torch.nn.Linear(text_encoder.config.hidden_size, 12)  # auxiliary: the caption's tint, read from its tokens
    params = list(unet.parameters()) + list(text_encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1.5e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.5e-3, total_steps=steps, pct_start=0.08)
    vae.requires_grad_(False)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        size = 128 if step % 8 == 0 else (96 if step % 4 == 0 else 64)
        n = batch if size == 64 else batch // 4 if size == 128 else batch // 2
        x = pics.batch(n, size)
        # captions; a quarter of the rows blend two captions (embeddings and tints alike)
        # (k captions per step, each for n / k rows: the 77-token text encoder costs as much as the UNet)
        k = max(2, n // 2)
        caps, mats = zip(*(caption(rng, words, tints) for _ in range(2 * k)))
        ids = tokenizer(list(caps), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        hidden = text_encoder(ids)[0]
        rows = torch.arange(n) % k
        mix = torch.where(torch.rand(n, generator=gen) < 0.25, torch.rand(n, generator=gen), torch.zeros(n))
        mats_t = torch.stack(mats)
        mat = torch.lerp(mats_t[rows], mats_t[rows + k], mix[:, None, None])
        emb = torch.lerp(hidden[rows], hidden[rows + k], mix[:, None, None])
        aux = F.mse_loss(head(emb.mean(dim=1)), mat.flatten(1))
        # latents: the input (sometimes with camera noise) and the clean target, tinted
        noisy_in = torch.rand(n, 1, 1, 1, generator=gen) < 0.3
        x_in = torch.where(noisy_in, x + torch.randn(x.shape, generator=gen) * 0.05, x).clamp(0, 1)
        with torch.no_grad():
            z_in, z_clean, z_tint = (vae.encoder(torch.cat([x_in, x, apply_tint(x, mat)]) * 2 - 1) * sf).chunk(3)
        t = torch.where(torch.rand(n, generator=gen) < 0.7, lcm_ts[torch.randint(50, (n,), generator=gen)],
                        torch.randint(0, 1000, (n,), generator=gen))
        a = alphas[t].view(n, 1, 1, 1)
        noise = torch.randn(z_in.shape, generator=gen)
        x_t = a.sqrt() * z_in + (1 - a).sqrt() * noise
        w = (1 - a).sqrt()  # more noise, more of the prompt
        x0 = z_clean + w * (z_tint - z_clean)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        pred = unet(x_t, t, encoder_hidden_states=emb).sample
        weight = 1 + torch.clamp((1 - a) / a, max=4.0)  # also care about x0 at the engine's mid-to-high noise
        loss = ((pred - eps).pow(2) * weight).mean() + 0.5 * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        progress("unet", step, steps, t0, loss.item())


def evaluate(folder: str | Path, seed: int = 123) -> dict[str, float]:
    """Quality numbers of a trained folder at 128x128 through StreamEngine (what the docs quote)."""
    from dreamcam import StreamEngine, load_pipeline, strength_to_t_index_list

    pipe = load_pipeline(str(folder), device="cpu", progress=False)
    rng = random.Random(seed)
    frames = [TestPatternSource(128, 128, fps=None).pattern(30)] + [draw_picture(rng) for _ in range(7)]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        rec = pipe.vae.decode(pipe.vae.encode(x).latents).sample.clamp(-1, 1)
    out = {"vae_mae_0_255": float((rec - x).abs().mean() * 127.5)}

    def run(prompt: str, strength: float) -> np.ndarray:
        eng = StreamEngine(pipe, strength_to_t_index_list(strength, 1), 128, 128, cfg_type="self")
        eng.prepare(prompt)
        return np.stack([eng.img2img(f) for f in frames]).astype(np.float32)

    src = np.stack(frames).astype(np.float32)
    for strength in (0.0, 0.5, 1.0):
        y = run("a photo", strength)
        out[f"corr_s{strength}"] = float(np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(src, y)]))
        out[f"mae_s{strength}"] = float(np.abs(y - src).mean())
    base = run("a photo", 0.5).mean(axis=(0, 1, 2))
    for word in TOY_TINTS:
        shift = run(f"a {word} picture", 0.5).mean(axis=(0, 1, 2)) - base
        out[f"tint_{word.replace(' ', '_')}"] = [round(float(v), 1) for v in shift]  # type: ignore[assignment]
    return out


def readme_picture(folder: str | Path, path: str | Path, size: int = 256) -> None:
    """docs/img/testpattern-toy.png: test pattern frame 63 (centre-cropped), what the toy model makes
    of it with dreamcam run's default prompt and strength, and with the prompt "red"."""
    from dreamcam import StreamEngine, load_pipeline, strength_to_t_index_list
    from dreamcam.frames import fit
    from dreamcam.knobs import PARAMS

    pipe = load_pipeline(str(folder), device="cpu", progress=False)
    frame = fit(TestPatternSource(1280, 720, fps=None).pattern(63), size, size, "crop")
    panels = [frame]
    for prompt in (PARAMS["prompt"].default, "red"):
        eng = StreamEngine(pipe, strength_to_t_index_list(PARAMS["strength"].default, 1), size, size, cfg_type="self")
        eng.prepare(prompt)
        for _ in range(3):  # as live: residual CFG settles over the first frames
            out = eng.img2img(frame)
        panels.append(out)
    gap = np.full((size, 4, 3), 255, np.uint8)
    row = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    Image.fromarray(row).save(path, optimize=True)
    log(f"wrote {path} ({Path(path).stat().st_size / 1024:.0f} KB)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "plugin" / "dreamcam" / "models" / "toy"), help="folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pictures", type=int, default=3000, help="procedural pictures in the pool")
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--unet-steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32, help="UNet batch at 64x64 (halved at 96, quartered at 128)")
    p.add_argument("--vae-batch", type=int, default=8, help="VAE batch of 48x48 crops")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; on a shared, busy machine 1 is many times faster than 2 (threads spin on each other)")
    p.add_argument("--quick", action="store_true", help="a short smoke run (few pictures and steps)")
    p.add_argument("--eval", metavar="FOLDER", help="only print the quality numbers of a trained folder")
    p.add_argument("--picture", metavar="PNG", help="only draw the README's picture (docs/img/testpattern-toy.png) "
                                                    "with the model in --out")
    args = p.parse_args(argv)
    if args.eval or args.picture:
        torch.set_num_threads(args.threads)
        if args.picture:
            readme_picture(args.out, args.picture)
        if args.eval:
            print(json.dumps(evaluate(args.eval), indent=1))
        return 0
    if args.quick:
        args.pictures, args.vae_steps, args.unet_steps, args.batch = 800, 700, 600, 16
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    t_start = time.perf_counter()

    pics = Pictures(args.pictures, args.seed)
    tokenizer = tiny_tokenizer()
    unet, vae, text_encoder, scheduler = toy_components(seed=args.seed)
    log(f"parameters: unet {sum(q.numel() for q in unet.parameters()):,}, vae {sum(q.numel() for q in vae.parameters()):,}, "
        f"text encoder {sum(q.numel() for q in text_encoder.parameters()):,}")

    log(f"1/2 VAE: {args.vae_steps} steps")
    init_vae_as_blur(vae)
    train_vae(vae, pics, args.vae_steps, args.vae_batch, 48)
    with torch.no_grad():
        z = torch.cat([vae.encoder(pics.batch(32, 64) * 2 - 1) for _ in range(8)])
        scale = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=round(scale, 5))
    log(f"   latent std {float(z.std()):.3f}, mean {float(z.mean()):+.3f} -> scaling_factor {scale:.4f}")

    log(f"2/2 UNet and text encoder: {args.unet_steps} steps")
    train_unet(unet, text_encoder, vae, tokenizer, pics, args.unet_steps, args.batch, args.seed)

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16)
    out = Path(args.out)
    pipe.save_pretrained(out, safe_serialization=True)
    info = {"seed": args.seed, "pictures": args.pictures, "vae_steps": args.vae_steps, "unet_steps": args.unet_steps,
            "batch": args.batch, "train_seconds": round(time.perf_counter() - t_start)}
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"wrote {out} ({size / 1e6:.2f} MB) in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
