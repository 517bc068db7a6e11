"""ONNX export of the engine's networks: the UNet and the tiny VAE's encoder and decoder.

Every graph has dynamic batch and resolution axes, so one TensorRT engine built from it (with an
optimisation profile over a range) serves every step count, frame buffer and resolution in
that range. Inputs and outputs by name:

| graph       | inputs                                                                  | output                     |
| ----------- | ----------------------------------------------------------------------- | -------------------------- |
| unet        | sample (B, 4, h, w), timestep (B,) float32, encoder_hidden_states (B, 77, D) | noise_pred (B, 4, h, w) |
| vae_encoder | images (B, 3, H, W) in [-1, 1]                                           | latents (B, 4, H/8, W/8)   |
| vae_decoder | latents (B, 4, h, w) (unscaled, as TAESD's decoder takes them)          | images (B, 3, 8h, 8w)      |
| unet_residuals | the unet's, then down_0 .. down_{n-1}, mid (ControlNet residuals, added) | noise_pred (B, 4, h, w) |
| controlnet  | sample, timestep, encoder_hidden_states, controlnet_cond (B, 3, 8h, 8w) in [0, 1], conditioning_scale (1,) float32 | down_0 .. down_{n-1}, mid |

With ControlNets the UNet engine is built from `unet_residuals`: the residuals are engine inputs,
fed from the ControlNet engines' outputs (summed in torch over several ControlNets). The scale
is an input of the ControlNet graph, so a live scale change needs no rebuild.

The graphs are exported in the modules' own dtype (fp16 on a GPU for TensorRT; fp32 on a CPU,
where the tests compare them against torch with onnxruntime).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

OPSET = 17


class UNetGraph(torch.nn.Module):
    """UNet2DConditionModel with plain tensor inputs and one tensor output."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class UNetResidualGraph(torch.nn.Module):
    """The UNet with ControlNet residuals as plain tensor inputs (n down residuals, then mid)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, *residuals):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                         down_block_additional_residuals=list(residuals[:-1]),
                         mid_block_additional_residual=residuals[-1], return_dict=False)[0]


class ControlNetGraph(torch.nn.Module):
    """A ControlNetModel with plain tensor inputs (the scale a (1,) tensor) and its residuals as
    separate outputs: down_0 .. down_{n-1}, mid."""

    def __init__(self, controlnet: torch.nn.Module) -> None:
        super().__init__()
        self.controlnet = controlnet

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        down, mid = self.controlnet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                    controlnet_cond=controlnet_cond, conditioning_scale=conditioning_scale[0],
                                    return_dict=False)
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
    p = next(unet.parameters())
    h, w = latent_hw
    d = unet.config.cross_attention_dim
    return (
        torch.randn(batch, unet.config.in_channels, h, w, device=p.device, dtype=p.dtype),
        torch.linspace(999, 1, batch, device=p.device, dtype=torch.float32),
        torch.randn(batch, text_len, d, device=p.device, dtype=p.dtype),
    )


def export_unet(unet: Any, path: str | Path, *, batch: int = 2, latent_hw: tuple[int, int] = (8, 8)) -> Path:
    """UNet -> ONNX with dynamic batch B and latent size (h, w); traced at the given example shape."""
    axes = {"sample": {0: "B", 2: "h", 3: "w"}, "timestep": {0: "B"}, "encoder_hidden_states": {0: "B"},
            "noise_pred": {0: "B", 2: "h", 3: "w"}}
    args = unet_example_inputs(unet, batch=batch, latent_hw=latent_hw)
    return _export(UNetGraph(unet), args, Path(path), ["sample", "timestep", "encoder_hidden_states"], "noise_pred", axes)


def residual_example_inputs(unet: Any, *, batch: int = 2, latent_hw: tuple[int, int] = (8, 8)) -> list[torch.Tensor]:
    """Random residuals of the shapes the UNet takes at this batch and latent size."""
    p = next(unet.parameters())
    h, w = latent_hw
    return [torch.randn(batch, c, h // f, w // f, device=p.device, dtype=p.dtype) for c, f in residual_factors(unet)]


def _residual_axes(n: int) -> dict[str, dict[int, str]]:
    return {name: {0: "B", 2: f"h{name}", 3: f"w{name}"} for name in residual_names(n)}


def export_unet_residuals(unet: Any, path: str | Path, *, batch: int = 2, latent_hw: tuple[int, int] = (8, 8)) -> Path:
    """UNet with ControlNet residual inputs -> ONNX, dynamic batch and latent size."""
    residuals = residual_example_inputs(unet, batch=batch, latent_hw=latent_hw)
    names = residual_names(len(residuals) - 1)
    axes = {"sample": {0: "B", 2: "h", 3: "w"}, "timestep": {0: "B"}, "encoder_hidden_states": {0: "B"},
            "noise_pred": {0: "B", 2: "h", 3: "w"}, **_residual_axes(len(residuals) - 1)}
    args = (*unet_example_inputs(unet, batch=batch, latent_hw=latent_hw), *residuals)
    return _export(UNetResidualGraph(unet), args, Path(path), ["sample", "timestep", "encoder_hidden_states", *names],
                   "noise_pred", axes)


def export_controlnet(controlnet: Any, unet: Any, path: str | Path, *, batch: int = 2,
                      latent_hw: tuple[int, int] = (8, 8)) -> Path:
    """ControlNetModel -> ONNX: dynamic batch and size; the scale an input, the residuals outputs."""
    sample, t, emb = unet_example_inputs(unet, batch=batch, latent_hw=latent_hw)
    h, w = latent_hw
    cond = torch.rand(batch, 3, 8 * h, 8 * w, device=sample.device, dtype=sample.dtype)
    scale = torch.ones(1, device=sample.device, dtype=sample.dtype)
    n = len(residual_factors(unet)) - 1
    axes = {"sample": {0: "B", 2: "h", 3: "w"}, "timestep": {0: "B"}, "encoder_hidden_states": {0: "B"},
            "controlnet_cond": {0: "B", 2: "H", 3: "W"}, **_residual_axes(n)}
    return _export(ControlNetGraph(controlnet), (sample, t, emb, cond, scale), Path(path),
                   ["sample", "timestep", "encoder_hidden_states", "controlnet_cond", "conditioning_scale"],
                   residual_names(n), axes)


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
