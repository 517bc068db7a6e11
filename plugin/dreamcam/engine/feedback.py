"""Latent feedback and the motion guard: each frame starts partly from the frame before.

Live img2img flickers because every frame re-imagines the camera's noise. Latent feedback
blends the previous frame's denoised latent `prev` into the new frame's start latent, as the
StreamDiffusion fork of livepeer/daydream does with `(1 - s) * x + s * prev`. Which latent is
blended matters. The fork blends the *noisy* start latent x_t = a*z + b*n (z the encoded input,
n the noise, a and b the first step's sqrt(alpha_bar) and sqrt(1 - alpha_bar)) with the *clean*
prev, so the noise in the result is (1 - s)*b*n: the UNet is told it sees timestep t but gets
less noise than t carries, and the LCM step's c_skip/c_out mis-scale it; past s of about 0.4
the picture turns flat and smeared. Here prev is noised like the input before the blend:

    x_t' = (1 - s) * x_t + s * (a*prev + b*n) = a * ((1 - s)*z + s*prev) + b*n

which is exactly the clean blend of the encoded input with prev, noised once with the frame's own
noise: the noise level stays the one the schedule expects at any s (measured in docs/stability.md).
All of it runs in the denoising stage from x_t, prev and the noise the encoder used, so the stage
split of the compiled backend (`--overlap-stages`) needs no hand-over of the clean latent.

Camera smoothing (`smoothing`) is the same blend on the input side: each frame's encoded camera
latent z is blended with the smoothed latent of the frame before, zs_k = (1 - m)*z_k + m*zs_(k-1),
a recursive temporal filter of what the model is shown, noised once as above. It is what steadies
a still camera: the flicker of img2img is the model re-imagining the camera's noise, and the
filter takes the noise out before the model sees it. Feedback of the *denoised* latent instead
feeds the model's own change of the picture back in, so on a still camera the picture drifts to
the model's fixed point (x = model((1 - s)*z + s*x)): the toy model's output followed its input
with correlation 0.79 at 0, 0.57 at feedback 0.4, and each cut wobbled the picture by 1.3-1.8
grey levels a frame while the feedback ramped back in. Smoothing at 0.4 steadies the same still
camera further (flicker 0.50x against feedback's 0.58x) with the correlation unchanged at 0.79 and
no wobble (docs/stability.md). Its cost is lag on slow motion: m/(1 - m) frames (0.7 at 0.4).
When both run, smoothing comes first: x0 = (1 - s)*zs + s*prev.

The motion guard: on a scene cut or fast motion, feedback would ghost the old scene into the new
one. Each frame's input is reduced to a 16x16 grey image (`adaptive_avg_pool2d` over every
k-th pixel, k keeping at least 8x8 samples a cell: every 4th at 512x512) and compared with
the previous frame's (mean absolute difference, in the input's [-1, 1] units); a difference above
the guard's threshold is a cut: that frame's feedback and smoothing drop to 0 and come back linearly over
`RAMP_FRAMES` frames. Everything is tensor ops on the engine's device with no host sync, and the
knob values live in device tensors, so a CUDA graph captured once follows every knob change.

The first frame after `prepare` counts as a cut whenever the guard is on (its thumbnail is
compared with a far-off one): a scene starts there, and nothing before it belongs to it.

`cut` (a 0-dim float tensor, 1.0 on a frame where a cut was detected) is handed to each callable
in `StreamEngine.scene_cut_hooks` inside the frame step, so other per-scene state (the cached
attention bank) can be reset with device ops on the same frame.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from dreamcam.engine.stability import FEEDBACK_MAX, SMOOTHING_MAX
from dreamcam.errors import ConfigError

log = logging.getLogger(__name__)

RAMP_FRAMES = 4  # frames the feedback takes to come back after a cut
MOTION_GRID = 16  # the motion check compares 16x16 grey thumbnails of consecutive inputs
# motion_guard g in (0, 1] -> threshold on the thumbnails' mean absolute difference ([-1, 1] units):
# log-linear from LOOSE (g near 0: only a hard cut) to TIGHT (g = 1: moderate motion)
THRESHOLD_LOOSE, THRESHOLD_TIGHT = 0.3, 0.01
NO_FRAME = 1e4  # the thumbnail before the first frame: any frame differs from it by more than any threshold


def motion_threshold(guard: float) -> float:
    """The thumbnail difference above which a frame counts as a cut; inf when the guard is off."""
    if guard <= 0:
        return math.inf
    return THRESHOLD_LOOSE * (THRESHOLD_TIGHT / THRESHOLD_LOOSE) ** guard


class LatentFeedback:
    """The device state and the ops of latent feedback and the motion guard for one engine.

    Args:
        frames: frames per call (F); lat: latent shape (4, h, w); device, dtype: the engine's.
    """

    def __init__(self, frames: int, lat: tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> None:
        self.value = 0.0  # the feedback knob (host copy)
        self.smoothing = 0.0  # the smoothing knob (host copy)
        self.guard = 0.0  # the motion_guard knob (host copy)
        self.in_graph = False  # a captured step holds the ops: run them whatever the knob values
        self.blocked: str | None = None  # why feedback must stay 0 (frames run side by side)
        self.mode = "renoised"  # "raw": the fork's blend of the noisy latent (kept for docs/stability.md's comparison)
        f32 = dict(dtype=torch.float32, device=device)
        self.prev = torch.zeros((frames, *lat), dtype=dtype, device=device)  # the last frame's denoised latent
        self.smoothed = torch.zeros((frames, *lat), dtype=dtype, device=device)  # the last frame's smoothed input latent
        self.knob = torch.zeros((), **f32)
        self.smooth_knob = torch.zeros((), **f32)
        self.threshold = torch.full((), math.inf, **f32)
        self.gate = torch.zeros((), **f32)  # 0..1: 0 right after a cut (and at the start), then ramps to 1
        self.last_thumb = torch.full((1, 1, MOTION_GRID, MOTION_GRID), NO_FRAME, **f32)
        self.score = torch.zeros((), **f32)  # this frame's motion score, written by `check_motion`
        self.score_seen = self.score  # what `blend` reads (a separate buffer once `split_score` ran)
        self.cut = torch.zeros((), **f32)  # 1.0 on a frame where a cut was detected
        self.applied = torch.zeros((), **f32)  # the feedback the last frame used (knob * gate)

    # ------------------------------------------------------------------ knobs (host, between frames)

    def set_value(self, value: float) -> None:
        v = _check("feedback", value, FEEDBACK_MAX)
        if v > 0 and self.blocked:
            log.warning("feedback stays 0: %s", self.blocked)
            v = 0.0
        if v > 0 and self.value == 0:
            self.gate.zero_()  # prev may be stale (not kept while off): ramp in from this frame
        self.value = v
        self.knob.fill_(v)

    def set_smoothing(self, value: float) -> None:
        v = _check("smoothing", value, SMOOTHING_MAX)
        if v > 0 and self.blocked:
            log.warning("smoothing stays 0: %s", self.blocked)
            v = 0.0
        if v > 0 and self.smoothing == 0:
            self.gate.zero_()  # the smoothed latent is stale (not kept while off): ramp in from this frame
        self.smoothing = v
        self.smooth_knob.fill_(v)

    @property
    def on(self) -> bool:
        """Whether feedback or smoothing is set above 0."""
        return self.value > 0 or self.smoothing > 0

    def set_guard(self, guard: float) -> None:
        self.guard = _check("motion_guard", guard, 1.0)
        self.threshold.fill_(motion_threshold(self.guard))

    def block(self, why: str) -> None:
        """Hold feedback at 0 from now on (a frame path that runs frames side by side); says so once."""
        for name, v in (("feedback", self.value), ("smoothing", self.smoothing)):
            if v > 0:
                log.warning("%s %g is off: %s", name, v, why)
        self.blocked = why
        self.value = self.smoothing = 0.0
        self.knob.zero_()
        self.smooth_knob.zero_()

    def reset(self) -> None:
        """Forget the previous frames (a new prompt or prepare): the next frame starts fresh."""
        self.gate.zero_()
        self.prev.zero_()
        self.smoothed.zero_()
        self.last_thumb.fill_(NO_FRAME)

    def state(self) -> list[torch.Tensor]:
        """The tensors a frame writes for the next (`StreamEngine.carried_state`)."""
        seen = [self.score_seen] if self.score_seen is not self.score else []
        return [self.prev, self.smoothed, self.gate, self.last_thumb, self.score, *seen, self.cut, self.applied]

    def split_score(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Give `blend` its own copy of the motion score: for a frame path whose encode (which
        writes the score) runs beside the denoising of the frame before (`StagedStep`), which
        hands the score over with the latents. Returns (written, read)."""
        if self.score_seen is self.score:
            self.score_seen = torch.zeros_like(self.score)
        return self.score, self.score_seen

    # ------------------------------------------------------------------ the frame step (device ops only)

    def check_motion(self, x: torch.Tensor) -> None:
        """x: the model input (F, 3, H, W) in [-1, 1]. Writes `score`: the largest mean absolute
        difference between the grey thumbnails of consecutive frames (the first against the last
        of the previous call)."""
        step = max(1, min(x.shape[-2:]) // (MOTION_GRID * 8))  # every step-th pixel: still 8x8 per cell
        thumb = F.adaptive_avg_pool2d(x[..., ::step, ::step], MOTION_GRID).float().mean(1, keepdim=True)
        seq = torch.cat([self.last_thumb, thumb])
        self.score.copy_((seq[1:] - seq[:-1]).abs().mean(dim=(1, 2, 3)).amax())
        self.last_thumb.copy_(thumb[-1:])

    def blend(self, x_t: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t: the new frames' start latents a*z + b*n; alpha, beta: a and b; noise: the n the
        encoder used. Returns x_t moved towards the smoothed input, then towards prev, by each
        knob times the gate (see the module)."""
        cut = self.score_seen > self.threshold
        self.cut.copy_(cut)
        gate = torch.where(cut, torch.zeros_like(self.gate), self.gate)
        s = self.knob * gate
        self.applied.copy_(s)
        self.gate.copy_((gate + 1.0 / RAMP_FRAMES).clamp_(max=1.0))
        m = (self.smooth_knob * gate).to(x_t.dtype)
        x_t = x_t + m * (alpha * self.smoothed + beta * noise - x_t)  # m = 0: x_t itself, bit for bit
        self.smoothed.copy_((x_t - beta * noise) / alpha)  # this frame's smoothed input latent
        target = self.prev if self.mode == "raw" else alpha * self.prev + beta * noise
        return x_t + s.to(x_t.dtype) * (target - x_t)

    def keep(self, x0: torch.Tensor) -> None:
        """Remember the frames' denoised latents for the next call."""
        self.prev.copy_(x0)


def _check(name: str, value: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= hi:
        raise ConfigError(f"{name} must be a number between 0 and {hi:g}, got {value!r}")
    return float(value)
