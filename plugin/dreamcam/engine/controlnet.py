"""ControlNets on the engine's frame step: control images per batch row, live scales, residuals.

A `ControlStack` holds one or more `ControlUnit`s (a diffusers `ControlNetModel`, the
preprocessors loaded for it, the one that runs now, and its scale). The engine calls:

- `feed(x)` once per frame, before the frame step and outside any captured graph: each unit's
  active preprocessor turns the F new frames into control images (float (F, 3, H, W) in [0, 1],
  what diffusers' ControlNet pipelines give the ControlNet), written into that unit's image
  buffer. In the stream batch (B = S*F rows, step-major) rows [k*F, (k+1)*F) hold the frames
  that entered k calls ago, so the buffer rolls like the latents: rows [F:] <- rows [:-F], then
  the new images into rows [:F]. Every latent is conditioned on its own frame's control image.
  The first feed (and the first after a unit was skipped at scale 0) fills every row with the
  new images: rows of frames from before have none that belongs to them.
- `residuals(x_in, t, rows, unet_kwargs)` inside the UNet step: each unit's ControlNet on the
  UNet's input batch (the control rows laid out like the latent rows, unconditional rows
  included), its down and mid residuals times its scale, summed over the units (as diffusers'
  MultiControlNetModel does). `unet_kwargs` are the UNet's conditioning keyword arguments
  (encoder_hidden_states, and for SDXL added_cond_kwargs), passed to every ControlNet as is.

Scales live in 0-dim device tensors filled in place (`set_scale`), so a captured graph reads
the new value with no re-capture. With `skip_zero` (eager) a unit at scale 0 is skipped: no
preprocessing, no ControlNet call; with every unit at 0 the UNet runs without residuals, which
is exactly the engine without ControlNet. A graphed backend clears `skip_zero` so the graph's
structure never depends on a value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dreamcam.engine.control_spec import MAX_CONTROLNETS, check_control_flags, check_preprocessor_spec
from dreamcam.engine.preprocessors import make_preprocessor
from dreamcam.errors import ConfigError
from dreamcam.models.controlnet import load_controlnet
from dreamcam.models.hub import Hub
from dreamcam.models.quiet import quiet_loggers

log = logging.getLogger(__name__)


@dataclass(eq=False)  # units compare by identity (their fields hold modules and tensors)
class ControlUnit:
    """One ControlNet: the model, its preprocessors by name (the first is active at start) and scale."""

    model: Any
    preprocessors: Mapping[str, Any]
    scale: float = 1.0
    name: str = "controlnet"
    active: str = ""
    images: torch.Tensor | None = field(default=None, repr=False)  # (rows, 3, H, W) in [0, 1]
    call: Any = field(default=None, repr=False)  # what runs the model (a backend's compiled one); None: the model
    stale: bool = field(default=True, repr=False)  # no control image fed since allocation or a skip
    scale_t: torch.Tensor | None = field(default=None, repr=False)  # 0-dim, on the engine's device

    def __post_init__(self) -> None:
        if not self.preprocessors:
            raise ConfigError(f"ControlNet {self.name} has no preprocessor: give it one with --control")
        self.active = self.active or next(iter(self.preprocessors))
        if self.active not in self.preprocessors:
            raise ConfigError(f"preprocessor {self.active!r} is not loaded for {self.name}; loaded: "
                              f"{', '.join(self.preprocessors)}")


class ControlStack:
    """The ControlNets an engine runs (at most `MAX_CONTROLNETS`), see the module docstring."""

    def __init__(self, units: Sequence[ControlUnit]) -> None:
        if not 1 <= len(units) <= MAX_CONTROLNETS:
            raise ConfigError(f"dreamcam runs 1 to {MAX_CONTROLNETS} ControlNets at once, got {len(units)}")
        self.units = list(units)
        self.skip_zero = True
        self.roll = False  # the stream batch with S > 1: rows carry frames of earlier calls
        self.frames = 1

    # ------------------------------------------------------------------ set-up

    def allocate(self, rows: int, frames: int, roll: bool, height: int, width: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        """Buffers for `rows` batch rows of which `frames` are new per call (the engine's prepare)."""
        self.frames, self.roll = frames, roll
        for u in self.units:
            if (u.model.device, u.model.dtype) != (device, dtype):
                with quiet_loggers("diffusers"):  # its note on casting with .to() is about fp32-kept modules: none here
                    u.model.to(device=device, dtype=dtype)
            u.images = torch.zeros((rows, 3, height, width), dtype=dtype, device=device)
            u.scale_t = torch.full((), float(u.scale), dtype=dtype, device=device)
            u.stale = True
            for p in u.preprocessors.values():
                to = getattr(p, "to", None)
                if callable(to):
                    to(device)

    def state(self) -> list[torch.Tensor]:
        """The tensors a frame writes and later frames read (the control images in flight)."""
        return [u.images for u in self.units if u.images is not None]

    def run_by(self, calls: Sequence[Callable[..., Any] | None]) -> None:
        """A graphed backend takes over: each unit runs through its call (None: its own model),
        and every unit runs each frame, its scale a device tensor the graph reads."""
        self.skip_zero = False
        for u, call in zip(self.units, calls, strict=True):
            u.call = call

    def release_calls(self) -> None:
        """Back to eager: each unit runs its own model, and a unit at scale 0 is skipped."""
        self.skip_zero = True
        for u in self.units:
            u.call = None

    # ------------------------------------------------------------------ live values

    def set_scale(self, index: int, scale: float) -> None:
        u = self._unit(index)
        u.scale = float(scale)
        if u.scale_t is not None:
            u.scale_t.fill_(u.scale)

    def set_preprocessor(self, index: int, name: str) -> None:
        u = self._unit(index)
        if name == "":
            name = next(iter(u.preprocessors))
        if name not in u.preprocessors:
            raise ConfigError(f"preprocessor {name!r} is not loaded for ControlNet {index + 1} ({u.name}); "
                              f"loaded: {', '.join(u.preprocessors)} (load more with --control A,B)")
        u.active = name

    def _unit(self, index: int) -> ControlUnit:
        if not 0 <= index < len(self.units):
            raise ConfigError(f"there is no ControlNet {index + 1}: {len(self.units)} loaded")
        return self.units[index]

    def running(self) -> list[ControlUnit]:
        """The units whose ControlNet runs this frame."""
        return [u for u in self.units if not (self.skip_zero and u.scale == 0.0)]

    # ------------------------------------------------------------------ per frame

    @torch.no_grad()
    def feed(self, x: torch.Tensor) -> None:
        """The F new frames, float (F, 3, H, W) in [-1, 1] on the engine's device: each running
        unit's control images for them, rolled into its buffer (see the module docstring)."""
        f = self.frames
        running = self.running()
        for u in self.units:
            if u not in running:
                u.stale = True  # its rows stopped following the frames while it was skipped
                continue
            img = u.preprocessors[u.active](x).to(u.images.dtype)
            if u.stale:  # (re)started: no history yet, every row takes the newest image
                u.images.copy_(img.repeat(u.images.shape[0] // f, 1, 1, 1))
                u.stale = False
                continue
            if self.roll:
                u.images[f:] = u.images[:-f].clone()
            u.images[:f].copy_(img)

    def residuals(self, x_in: torch.Tensor, t: torch.Tensor, layout: tuple[str, int],
                  unet_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The UNet's extra keyword arguments for this batch: down_block_additional_residuals and
        mid_block_additional_residual summed over the running units; {} when none runs.

        layout: how the UNet batch repeats the latent rows: ("none", 0), ("initialize", F) (the
        first F rows again, ahead) or ("full", 0) (all rows twice)."""
        down, mid = None, None
        for u in self.running():
            cond = rows_like(u.images, layout)
            d, m = (u.call or u.model)(x_in, t, controlnet_cond=cond, conditioning_scale=u.scale_t, return_dict=False,
                           **unet_kwargs)
            down = list(d) if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        if down is None:
            return {}
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def rows_like(images: torch.Tensor, layout: tuple[str, int]) -> torch.Tensor:
    """Control images laid out like the UNet batch (unconditional rows first, as the latents)."""
    kind, f = layout
    if kind == "initialize":
        return torch.cat([images[:f], images], dim=0)
    if kind == "full":
        return torch.cat([images, images], dim=0)
    return images


def build_control_stack(unet: Any, controlnets: Sequence[str], controls: Sequence[str], *,
                        scales: Sequence[float] = (), active: Sequence[str] = (), hub: Any = None) -> ControlStack:
    """The ControlStack `--controlnet` / `--control` name: one ControlNet per entry of
    `controlnets` (loaded for `unet`, see models/controlnet.py), each with the preprocessors of
    its entry in `controls` ("canny" or "canny,depth:tiny": every one loaded, the first runs
    unless `active` names another), at `scales` (default 1)."""
    controls = check_control_flags(controlnets, controls)
    hub = hub or Hub()
    units = []
    for i, (source, spec) in enumerate(zip(controlnets, controls)):
        model = load_controlnet(source, unet, hub=hub)
        preps = {}
        for one in spec.split(","):
            needs_hub = one.startswith("depth") and one != "depth:tiny"  # the one that may download
            preps[check_preprocessor_spec(one)] = make_preprocessor(one, online=needs_hub and hub.online())
        unit = ControlUnit(model.eval(), preps, scale=float(scales[i]) if i < len(scales) else 1.0, name=source,
                           active=active[i] if i < len(active) else "")
        units.append(unit)
    return ControlStack(units)

