"""ONNX export of the engine's networks: the UNet and the tiny VAE's encoder and decoder.

Every graph has dynamic batch and resolution axes, so one TensorRT engine built from it (with an
optimisation profile over a range) serves every step count, frame buffer and resolution in
that range. Inputs and outputs by name:

| graph       | inputs                                                                  | output                     |
| ----------- | ----------------------------------------------------------------------- | -------------------------- |
| unet        | sample (B, 4, h, w), timestep (B,) float32, encoder_hidden_states (B, 77, D); SDXL also text_embeds (B, P), time_ids (B, 6) | noise_pred (B, 4, h, w) |
| vae_encoder | images (B, 3, H, W) in [-1, 1]                                           | latents (B, 4, H/8, W/8)   |
| vae_decoder | latents (B, 4, h, w) (unscaled, as TAESD's decoder takes them)          | images (B, 3, 8h, 8w)      |
| unet_residuals | the unet's (SDXL's two included), then down_0 .. down_{n-1}, mid (ControlNet residuals, added) | noise_pred (B, 4, h, w) |
| controlnet  | the unet's (SDXL's two included), then controlnet_cond (B, 3, 8h, 8w) in [0, 1], conditioning_scale (1,) float32 | down_0 .. down_{n-1}, mid |

With ControlNets the UNet engine is built from `unet_residuals`: the residuals are engine inputs,
fed from the ControlNet engines' outputs (summed in torch over several ControlNets). The scale
is an input of the ControlNet graph, so a live scale change needs no rebuild.

An SDXL UNet (addition_embed_type "text_time") takes its added conditioning as two more inputs,
the pooled text embeddings and the time ids, so a new prompt or another engine size (the time ids
hold it) needs no new graph or engine.

With cached attention on (engine/attention.py), the UNet is exported as `unet_bank` instead: the
same three inputs, then `attn_mask` (4,) and `attn_write` (4,) (float32, 1 = slot attended /
slot written this frame), `attn_fusion` (1,) float32, then every layer's bank
`bank_k{i}`, `bank_v{i}` (and `bank_o{i}` for fusion layers), each (4, B, tokens_i, width_i);
outputs `noise_pred` and the updated bank as `bank_k{i}_out`, ... in the same order. The graph
is pure (bank in -> bank out); the TensorRT backend binds the engine's bank tensors as the
inputs and copies the outputs back after each call.

The graphs are exported in the modules' own dtype (fp16 on a GPU for TensorRT; fp32 on a CPU,
where the tests compare them against torch with onnxruntime).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from dreamcam.engine.attention import router_for
from dreamcam.errors import ConfigError

log = logging.getLogger(__name__)

OPSET = 17


SDXL_INPUTS = ("text_embeds", "time_ids")  # the added conditioning, in added_cond_kwargs' names


def unet_is_sdxl(unet: Any) -> bool:
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def unet_input_names(unet: Any) -> list[str]:
    """The UNet graph's inputs in order: sample, timestep, encoder_hidden_states (and SDXL's two)."""
    return ["sample", "timestep", "encoder_hidden_states", *(SDXL_INPUTS if unet_is_sdxl(unet) else ())]


def sdxl_widths(unet: Any) -> tuple[int, int]:
    """An SDXL UNet's pooled text-embedding width P and number of time ids, from its config."""
    cfg = unet.config
    n_ids = 6  # original size, crop top-left, target size
    return int(cfg.projection_class_embeddings_input_dim) - n_ids * int(cfg.addition_time_embed_dim), n_ids


class UNetGraph(torch.nn.Module):
    """UNet2DConditionModel with plain tensor inputs and one tensor output (SDXL: the added
    conditioning as two more tensor inputs)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
        added = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added,
                         return_dict=False)[0]


class UNetBankGraph(torch.nn.Module):
    """The UNet with cached attention as a pure function: bank and control in, prediction and the
    updated bank out (`AttentionBank.functional`), attending to every slot as a graph must."""

    def __init__(self, unet: torch.nn.Module, bank: Any) -> None:
        super().__init__()
        self.unet = unet
        self.bank = bank

    def forward(self, sample, timestep, encoder_hidden_states, attn_mask, attn_write, attn_fusion, *bank):
        router = router_for(self.unet)
        router.install()
        static, self.bank.static = self.bank.static, True
        routed, router.bank = router.bank, self.bank
        try:
            fusion = attn_fusion.reshape(()).to(sample.dtype)
            with self.bank.functional(list(bank), attn_mask > 0.5, attn_write > 0.5, fusion) as new:
                pred = self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
        finally:
            self.bank.static, router.bank = static, routed
        return (pred, *new)


def _split_added(module: Any, rest: tuple) -> tuple[dict | None, tuple]:
    """SDXL's added conditioning (the first two of `rest` for an SDXL module) and what follows."""
    if not unet_is_sdxl(module):
        return None, rest
    return dict(zip(SDXL_INPUTS, rest[:2])), rest[2:]


class UNetResidualGraph(torch.nn.Module):
    """The UNet with ControlNet residuals as plain tensor inputs (SDXL: text_embeds, time_ids
    first), then n down residuals, then mid."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, *rest):
        added, residuals = _split_added(self.unet, rest)
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added,
                         down_block_additional_residuals=list(residuals[:-1]),
                         mid_block_additional_residual=residuals[-1], return_dict=False)[0]


class ControlNetGraph(torch.nn.Module):
    """A ControlNetModel with plain tensor inputs (the scale a (1,) tensor) and its residuals as
    separate outputs: down_0 .. down_{n-1}, mid. An SDXL ControlNet takes text_embeds and time_ids
    after encoder_hidden_states, as the UNet graph does."""

    def __init__(self, controlnet: torch.nn.Module) -> None:
        super().__init__()
        self.controlnet = controlnet

    def forward(self, sample, timestep, encoder_hidden_states, *rest):
        added, (controlnet_cond, conditioning_scale) = _split_added(self.controlnet, rest)
        down, mid = self.controlnet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                    controlnet_cond=controlnet_cond, conditioning_scale=conditioning_scale[0],
                                    added_cond_kwargs=added, return_dict=False)
        return (*down, mid)


def residual_names(n_down: int) -> list[str]:
    """The residual tensors' names in the graphs: down_0 .. down_{n-1}, mid."""
    return [f"down_{i}" for i in range(n_down)] + ["mid"]


def residual_factors(unet: Any) -> list[tuple[int, int]]:
    """(channels, downsampling factor vs the latent) of each residual the UNet takes, down ones
    then mid, in the order of diffusers' ControlNetModel outputs: conv_in, then each down
    block's layers and its downsampler, then the mid block."""
    cfg = unet.config
    chans = list(cfg.block_out_channels)
    layers = cfg.layers_per_block if isinstance(cfg.layers_per_block, int) else cfg.layers_per_block[0]
    out = [(chans[0], 1)]
    factor = 1
    for i, c in enumerate(chans):
        out += [(c, factor)] * layers
        if i < len(chans) - 1:
            factor *= 2
            out.append((c, factor))
    return out + [(chans[-1], factor)]


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], output: str | list[str],
            dynamic_axes: dict[str, dict[int, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = [output] if isinstance(output, str) else list(output)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    log.info("exported %s", path)
    return path


def unet_example_inputs(unet: Any, *, batch: int = 2, latent_hw: tuple[int, int] = (8, 8),
                        text_len: int = 77) -> tuple[torch.Tensor, ...]:
    """Example inputs in `unet_input_names` order (SDXL: also pooled embeddings and the time ids
    of an image of 8h x 8w pixels)."""
    p = next(unet.parameters())
    h, w = latent_hw
    d = unet.config.cross_attention_dim
    args = (
        torch.randn(batch, unet.config.in_channels, h, w, device=p.device, dtype=p.dtype),
        torch.linspace(999, 1, batch, device=p.device, dtype=torch.float32),
        torch.randn(batch, text_len, d, device=p.device, dtype=p.dtype),
    )
    if not unet_is_sdxl(unet):
        return args
    width, _ = sdxl_widths(unet)
    ids = torch.tensor([8 * h, 8 * w, 0, 0, 8 * h, 8 * w], device=p.device, dtype=p.dtype).expand(batch, -1)
    return (*args, torch.randn(batch, width, device=p.device, dtype=p.dtype), ids.contiguous())


def export_unet(unet: Any, path: str | Path, *, batch: int = 2, latent_hw: tuple[int, int] = (8, 8)) -> Path:
    """UNet -> ONNX with dynamic batch B and latent size (h, w); traced at the given example shape."""
    names = unet_input_names(unet)
    axes = {"sample": {0: "B", 2: "h", 3: "w"}, "noise_pred": {0: "B", 2: "h", 3: "w"},
            **{name: {0: "B"} for name in names[1:]}}
    args = unet_example_inputs(unet, batch=batch, latent_hw=latent_hw)
    return _export(UNetGraph(unet), args, Path(path), names, "noise_pred", axes)


BANK_CONTROL = ("attn_mask", "attn_write", "attn_fusion")


def unet_bank_example_inputs(engine: Any) -> tuple[torch.Tensor, ...]:
    """Inputs of `unet_bank` at the engine's batch and size: random sample and embeddings, the
    engine's current control values and its live bank tensors (as they are)."""
    bank = engine.attention_bank
    c = bank.control
    sample, t, emb = unet_example_inputs(engine.pipe.unet, batch=engine.unet_batch_size,
                                         latent_hw=(engine.latent_height, engine.latent_width))
    ctl = (c.mask.float(), c.write.float(), c.fusion.float().reshape(1))
    return (sample, t, emb, *ctl, *bank.io_tensors())


def export_unet_bank(engine: Any, path: str | Path) -> Path:
    """The engine's UNet with its cached-attention bank as inputs and outputs (`unet_bank`);
    dynamic batch B, latent size (h, w) and bank tokens t{i}; traced at the engine's shape."""
    bank = engine.attention_bank
    names = bank.io_names()
    axes = {"sample": {0: "B", 2: "h", 3: "w"}, "timestep": {0: "B"}, "encoder_hidden_states": {0: "B"},
            "noise_pred": {0: "B", 2: "h", 3: "w"}}
    for name in names:
        i = name[len("bank_k"):]
        axes[name] = axes[name + "_out"] = {1: "B", 2: f"t{i}"}
    inputs = ["sample", "timestep", "encoder_hidden_states", *BANK_CONTROL, *names]
    args = unet_bank_example_inputs(engine)
    return _export(UNetBankGraph(engine.pipe.unet, bank), args, Path(path), inputs,
                   ["noise_pred", *(n + "_out" for n in names)], axes)


def residual_example_inputs(unet: Any, *, batch: int = 2, latent_hw: tuple[int, int] = (8, 8)) -> list[torch.Tensor]:
    """Random residuals of the shapes the UNet takes at this batch and latent size."""
    p = next(unet.parameters())
    h, w = latent_hw
    return [torch.randn(batch, c, h // f, w // f, device=p.device, dtype=p.dtype) for c, f in residual_factors(unet)]


def _residual_axes(n: int) -> dict[str, dict[int, str]]:
    return {name: {0: "B", 2: f"h{name}", 3: f"w{name}"} for name in residual_names(n)}


def export_unet_residuals(unet: Any, path: str | Path, *, batch: int = 2, latent_hw: tuple[int, int] = (8, 8)) -> Path:
    """UNet with ControlNet residual inputs -> ONNX, dynamic batch and latent size; the inputs
    are `unet_input_names` (SDXL's added conditioning included), then the residuals."""
    residuals = residual_example_inputs(unet, batch=batch, latent_hw=latent_hw)
    names = residual_names(len(residuals) - 1)
    inputs = unet_input_names(unet)
    axes = {"sample": {0: "B", 2: "h", 3: "w"}, "noise_pred": {0: "B", 2: "h", 3: "w"},
            **{name: {0: "B"} for name in inputs[1:]}, **_residual_axes(len(residuals) - 1)}
    args = (*unet_example_inputs(unet, batch=batch, latent_hw=latent_hw), *residuals)
    return _export(UNetResidualGraph(unet), args, Path(path), [*inputs, *names], "noise_pred", axes)


def export_controlnet(controlnet: Any, unet: Any, path: str | Path, *, batch: int = 2,
                      latent_hw: tuple[int, int] = (8, 8)) -> Path:
    """ControlNetModel -> ONNX: dynamic batch and size; the scale an input, the residuals outputs.
    Inputs: `unet_input_names(controlnet)` (an SDXL ControlNet: text_embeds, time_ids too), then
    controlnet_cond and conditioning_scale."""
    if unet_is_sdxl(controlnet) != unet_is_sdxl(unet):
        raise ConfigError("this ControlNet was made for another architecture than the UNet (SDXL vs SD 1.x/2.x): "
                          "use a ControlNet for the model's architecture")
    args = unet_example_inputs(unet, batch=batch, latent_hw=latent_hw)
    sample = args[0]
    h, w = latent_hw
    cond = torch.rand(batch, 3, 8 * h, 8 * w, device=sample.device, dtype=sample.dtype)
    scale = torch.ones(1, device=sample.device, dtype=sample.dtype)
    n = len(residual_factors(unet)) - 1
    inputs = unet_input_names(controlnet)
    axes = {"sample": {0: "B", 2: "h", 3: "w"}, **{name: {0: "B"} for name in inputs[1:]},
            "controlnet_cond": {0: "B", 2: "H", 3: "W"}, **_residual_axes(n)}
    return _export(ControlNetGraph(controlnet), (*args, cond, scale), Path(path),
                   [*inputs, "controlnet_cond", "conditioning_scale"], residual_names(n), axes)


def export_vae_encoder(vae: Any, path: str | Path, *, batch: int = 1, hw: tuple[int, int] = (64, 64)) -> Path:
    p = next(vae.parameters())
    x = torch.rand(batch, 3, *hw, device=p.device, dtype=p.dtype) * 2 - 1
    axes = {"images": {0: "B", 2: "H", 3: "W"}, "latents": {0: "B", 2: "h", 3: "w"}}
    return _export(vae.encoder, (x,), Path(path), ["images"], "latents", axes)


def export_vae_decoder(vae: Any, path: str | Path, *, batch: int = 1, latent_hw: tuple[int, int] = (8, 8)) -> Path:
    p = next(vae.parameters())
    z = torch.randn(batch, vae.config.latent_channels, *latent_hw, device=p.device, dtype=p.dtype)
    axes = {"latents": {0: "B", 2: "h", 3: "w"}, "images": {0: "B", 2: "H", 3: "W"}}
    return _export(vae.decoder, (z,), Path(path), ["latents"], "images", axes)


def export_all(unet: Any, vae: Any, folder: str | Path, *, latent_hw: tuple[int, int] = (8, 8)) -> dict[str, Path]:
    """All three graphs into `folder` (unet.onnx, vae_encoder.onnx, vae_decoder.onnx).

    Large UNets (over 2 GB of weights in fp32) are written with external data next to the file.
    """
    folder = Path(folder)
    h, w = latent_hw
    return {
        "unet": export_unet(unet, folder / "unet.onnx", latent_hw=latent_hw),
        "vae_encoder": export_vae_encoder(vae, folder / "vae_encoder.onnx", hw=(8 * h, 8 * w)),
        "vae_decoder": export_vae_decoder(vae, folder / "vae_decoder.onnx", latent_hw=latent_hw),
    }
