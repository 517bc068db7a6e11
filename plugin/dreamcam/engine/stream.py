"""StreamEngine: the StreamDiffusion frame step (stream batch, RCFG, LCM) on pre-allocated tensors.

Notation used below (all shapes fixed at `prepare`):

- S = len(t_index_list): denoising steps each frame goes through.
- F = frame_buffer_size: camera frames that enter the pipeline per call.
- B = S*F with the denoising batch (every step of F consecutive frames in one UNet call),
  B = F without it (the steps of one call run one after another).

Value ranges: `process` takes and returns float images (F, 3, H, W) nominally in [-1, 1]
(the decoder's output is not clamped, as in the reference implementation); `img2img` and
`txt2img` speak uint8 RGB.

With frame_buffer_size > 1 the batch is step-major: rows [k*F, (k+1)*F) hold the F frames
at step k. Each call feeds F new frames and returns the F frames that finished their last step
(S-1 calls later). By default the noise of all F rows of one step is the same tensor, so each
frame follows exactly the trajectory it would have with frame_buffer_size=1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dreamcam.engine.feedback import LatentFeedback
from dreamcam.engine.attention import CachedAttention
from dreamcam.engine.controlnet import ControlStack
from dreamcam.engine.state import EngineState
from dreamcam.errors import ConfigError
from dreamcam.models.pipelines import is_sdxl, move_pipeline
from dreamcam.models.quiet import quiet_imports
from dreamcam.engine.schedule import CFG_TYPES, check_size, check_t_index_list
from dreamcam.engine.similarity import SimilarityFilter



class StreamEngine(CachedAttention, EngineState):
    """Few-step img2img / txt2img over a stream of frames, StreamDiffusion style.

    `prepare` and the live setters (set_prompt, set_strength, set_seed, ...) are `EngineState`'s
    (engine/state.py), the cached-attention setters (set_attn_bank, ...) `CachedAttention`'s
    (engine/attention.py); this class owns the engine structure and the frame step.

    Args:
        pipe: a diffusers `StableDiffusionPipeline` (SD 1.x / 2.x / sd-turbo architecture) or
            `StableDiffusionXLPipeline` (SDXL / SDXL-Turbo: the UNet also gets the pooled text
            embeddings and the time ids, see `EngineState.unet_conditioning`).
        t_index_list: indices into the `num_inference_steps` LCM schedule, strictly increasing;
            one UNet step per index. Lower indices are noisier (more change).
        width, height: engine resolution in pixels, multiples of 8.
        cfg_type: residual classifier-free guidance: "none", "self", "initialize" or "full".
        frame_buffer_size: camera frames per UNet batch (F).
        use_denoising_batch: all steps of consecutive frames in one UNet call (the stream batch).
        do_add_noise: re-noise intermediate latents between steps.
        device, dtype: where and in which precision to run (default: the pipeline's).
        control: ControlNets run on every UNet step (engine/controlnet.py), or None.
    """

    def __init__(
        self,
        pipe: Any,
        t_index_list: Sequence[int] = (35,),
        width: int = 512,
        height: int = 512,
        *,
        cfg_type: str = "self",
        frame_buffer_size: int = 1,
        use_denoising_batch: bool = True,
        do_add_noise: bool = True,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        control: ControlStack | None = None,
    ) -> None:
        # 1. Check inputs
        if cfg_type not in CFG_TYPES:
            raise ConfigError(f"cfg_type must be one of {', '.join(CFG_TYPES)}; got {cfg_type!r}")
        if not isinstance(frame_buffer_size, int) or frame_buffer_size < 1:
            raise ConfigError(f"frame_buffer_size must be a whole number >= 1, got {frame_buffer_size!r}")
        for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise ConfigError(f"the pipeline has no {part}: pass a diffusers StableDiffusionPipeline")
        self.is_sdxl = is_sdxl(pipe)
        if self.is_sdxl:
            for part in ("text_encoder_2", "tokenizer_2"):
                if getattr(pipe, part, None) is None:
                    raise ConfigError(f"the pipeline's UNet takes SDXL's added conditioning but the pipeline has no "
                                      f"{part}: pass a diffusers StableDiffusionXLPipeline")
        self.width = check_size("width", width)
        self.height = check_size("height", height)
        self.t_index_list = check_t_index_list(t_index_list)

        # 2. Components, device and precision
        quiet_imports()
        from diffusers import LCMScheduler

        move_pipeline(pipe, device, dtype)
        self.device, self.dtype = pipe.unet.device, pipe.unet.dtype
        self.pipe = pipe
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.text_encoder = pipe.text_encoder
        self.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
        self.vae_scale_factor = int(pipe.vae_scale_factor)
        self.latent_height = self.height // self.vae_scale_factor
        self.latent_width = self.width // self.vae_scale_factor

        # 3. Batch structure (fixed for the engine's life: buffers never change shape)
        self.cfg_type = cfg_type
        self.frame_buffer_size = frame_buffer_size
        self.use_denoising_batch = use_denoising_batch
        self.do_add_noise = do_add_noise
        self.denoising_steps_num = len(self.t_index_list)
        s, f = self.denoising_steps_num, frame_buffer_size
        self.batch_size = s * f if use_denoising_batch else f
        # rows of unconditional embeddings the UNet batch carries ahead of the conditional ones
        self.uncond_rows = {"full": self.batch_size, "initialize": f}.get(cfg_type, 0)
        self.unet_batch_size = self.batch_size + self.uncond_rows

        self.control = control
        self.similarity_filter: SimilarityFilter | None = None
        # smoothing, latent feedback and the motion guard (engine/feedback.py): off until set_smoothing /
        # set_feedback / set_motion_guard
        self.latent_feedback = LatentFeedback(f, (4, self.latent_height, self.latent_width), self.device, self.dtype)
        # callables taking the 0-dim `cut` tensor (1.0 on a frame where the motion guard saw a scene
        # cut), called inside the frame step: device ops only, so a captured graph holds them
        self.scene_cut_hooks: list = []
        self.prepared = False
        self.num_inference_steps = 50

    # ------------------------------------------------------------------ the frame step

    def _feedback_running(self) -> bool:
        """Whether this frame runs the feedback and motion ops (off: skipped, today's engine)."""
        fb = self.latent_feedback
        return fb.in_graph or fb.on or (fb.guard > 0 and bool(self.scene_cut_hooks))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        if self._feedback_running():
            self.latent_feedback.check_motion(x.to(device=self.device))
        out = self.vae.encode(x.to(device=self.device, dtype=self.vae.dtype))
        dist = getattr(out, "latent_dist", None)
        latents = dist.sample(self.generator) if dist is not None else out.latents
        latents = latents * self.vae.config.scaling_factor
        f = x.shape[0]
        noise = self._init_noise[0] if f == 1 else self._init_noise[:f]
        return self.alpha_prod_t_sqrt[0] * latents + self.beta_prod_t_sqrt[0] * noise

    def decode_image(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]

    def _scheduler_step(self, model_pred, x, idx: int | None = None):
        if idx is None:
            f_theta = (x - self.beta_prod_t_sqrt * model_pred) / self.alpha_prod_t_sqrt
            return self.c_out * f_theta + self.c_skip * x
        f_theta = (x - self.beta_prod_t_sqrt[idx] * model_pred) / self.alpha_prod_t_sqrt[idx]
        return self.c_out[idx] * f_theta + self.c_skip[idx] * x

    def _unet_step(self, x: torch.Tensor, t: torch.Tensor, idx: int | None = None):
        f = self.frame_buffer_size
        cfg = self.cfg_type
        # 1. UNet batch: unconditional rows first
        if cfg == "initialize":
            x_in = torch.cat([x[:f], x], dim=0)
        elif cfg == "full":
            x_in = torch.cat([x, x], dim=0)
        else:
            x_in = x
        self.route_attention()  # cached attention: this engine's bank (or none) for the UNet's self-attention
        kwargs = self.unet_kwargs()
        if self.control is not None:
            layout = (cfg, f) if cfg in ("initialize", "full") else ("none", 0)
            kwargs = {**kwargs, **self.control.residuals(x_in, t, layout, kwargs)}
        pred = self.unet(x_in, t, **kwargs, return_dict=False)[0]

        # 2. Residual classifier-free guidance
        if cfg == "none":
            model_pred = pred
        else:
            if cfg == "initialize":
                text = pred[f:]
                self.stock_noise[:f] = torch.where(self._cfg_on, pred[:f], self.stock_noise[:f])
            elif cfg == "full":
                uncond, text = pred.chunk(2)
            else:
                text = pred
            if cfg in ("self", "initialize"):
                uncond = self.stock_noise * self._delta
            model_pred = uncond + self._guidance * (text - uncond)

        # 3. LCM step to the denoised estimate
        denoised = self._scheduler_step(model_pred, x, idx)
        if idx is None and cfg in ("self", "initialize"):
            # residual noise for the next call: what this step's prediction leaves behind
            delta_x = self._scheduler_step(model_pred, self.beta_prod_t_sqrt * self.stock_noise)
            delta_x = self._alpha_next * delta_x / self._beta_next
            self.stock_noise.copy_(torch.cat([self._init_noise[f:], self._init_noise[:f]], dim=0) + delta_x)
        return denoised

    def unet_kwargs(self) -> dict[str, Any]:
        """The UNet's conditioning keyword arguments, the same for every ControlNet: the one
        place that builds them (encoder_hidden_states; SDXL's added_cond_kwargs: `unet_conditioning`)."""
        return self.unet_conditioning

    @torch.no_grad()
    def feed_control(self, x: torch.Tensor) -> None:
        """The new frames' control images (float (F, 3, H, W) in [-1, 1]) into the ControlNets'
        buffers; once per frame, before `frame_step` (outside a captured graph). No-op without
        ControlNets."""
        if self.control is not None:
            self.control.feed(x)

    def predict_x0_batch(self, x_t_latent: torch.Tensor) -> torch.Tensor:
        """The denoised latents of the frames that finished, from the new frames' start latents
        (`encode_image`'s), with latent feedback and the motion guard when they run."""
        if not self._feedback_running():
            return self._denoise(x_t_latent)
        fb, f = self.latent_feedback, self.frame_buffer_size
        noise = self._init_noise[0] if f == 1 else self._init_noise[:f]  # the noise encode_image used
        x_t_latent = fb.blend(x_t_latent, self.alpha_prod_t_sqrt[0], self.beta_prod_t_sqrt[0], noise)
        for hook in self.scene_cut_hooks:
            hook(fb.cut)
        x0 = self._denoise(x_t_latent)
        fb.keep(x0)
        return x0

    def _denoise(self, x_t_latent: torch.Tensor) -> torch.Tensor:
        f, s = self.frame_buffer_size, self.denoising_steps_num
        if self.use_denoising_batch:
            if s > 1:
                x = self._x_batch
                x[:f] = x_t_latent
                self.stock_noise.copy_(torch.cat((self._init_noise[:f], self.stock_noise[:-f]), dim=0))
            else:
                x = x_t_latent
            x0 = self._unet_step(x, self._unet_t)
            if s > 1:
                keep = self.alpha_prod_t_sqrt[f:] * x0[:-f]
                if self.do_add_noise:
                    keep = keep + self.beta_prod_t_sqrt[f:] * self._init_noise[f:]
                self._x_batch[f:] = keep
                return x0[-f:]
            return x0

        # sequential: one UNet call per step; the encoded latent seeds the next frame's noise
        self._init_noise.copy_(x_t_latent)
        x = x_t_latent
        for idx in range(s):
            t = self._timesteps[idx].expand(f)
            if self.cfg_type in ("initialize", "full"):
                t = torch.cat([t, t])
            x0 = self._unet_step(x, t, idx)
            if idx < s - 1:
                x = self.alpha_prod_t_sqrt[idx + 1] * x0
                if self.do_add_noise:
                    noise = torch.randn(x0.shape, generator=self.generator).to(x0.device, x0.dtype)
                    x = x + self.beta_prod_t_sqrt[idx + 1] * noise
        return x0

    @torch.no_grad()
    def frame_step(self, x: torch.Tensor) -> torch.Tensor:
        """Encode, denoise and decode F frames. Touches only pre-allocated engine state."""
        return self.decode_image(self.predict_x0_batch(self.encode_image(x)))

    @torch.no_grad()
    def process(self, x: torch.Tensor) -> torch.Tensor:
        """float (F, 3, H, W) in [-1, 1] -> float (F, 3, H, W), nominally in [-1, 1]."""
        self._require_prepared()
        expected = (self.frame_buffer_size, 3, self.height, self.width)
        if tuple(x.shape) != expected:
            raise ConfigError(f"process expects a float tensor of shape {expected}, got {tuple(x.shape)}")
        sim = self.similarity_filter
        if sim is not None and (again := sim.repeat(x)) is not None:
            return again
        self.feed_control(x)
        y = self.frame_step(x)
        if sim is not None:
            sim.keep(y)
        return y

    # ------------------------------------------------------------------ uint8 helpers

    def img2img(self, frame):
        """uint8 RGB frame (H, W, 3) or F frames (F, H, W, 3), numpy or torch -> the same kind."""
        is_numpy = isinstance(frame, np.ndarray)
        t = torch.from_numpy(frame) if is_numpy else frame
        if t.dtype != torch.uint8 or t.shape[-1] != 3 or t.ndim not in (3, 4):
            raise ConfigError(f"img2img expects uint8 RGB frames (H, W, 3) or (F, H, W, 3), got {t.dtype} {tuple(t.shape)}")
        if tuple(t.shape[-3:-1]) != (self.height, self.width):
            raise ConfigError(
                f"frame is {t.shape[-2]}x{t.shape[-3]}, the engine runs at {self.width}x{self.height}: "
                "resize it first (dreamcam.frames.fit does crop, letterbox or stretch)"
            )
        single = t.ndim == 3
        y = self.process(to_model_input(t, self.device, self.dtype))
        out = to_uint8_frames(y)
        out = out[0] if single else out
        return out.numpy() if is_numpy else out

    @torch.no_grad()
    def txt2img(self):
        """One image (or F images) from noise and the current prompt, uint8 RGB numpy."""
        self._require_prepared()
        f = self.frame_buffer_size
        latent = torch.randn((f, 4, self.latent_height, self.latent_width), generator=self.generator)
        y = self.decode_image(self._denoise(latent.to(self.device, self.dtype)))  # no feedback: nothing came before
        out = to_uint8_frames(y).numpy()
        return out[0] if f == 1 else out


def to_model_input(frames: torch.Tensor, device, dtype) -> torch.Tensor:
    """uint8 (H, W, 3) or (F, H, W, 3) -> float (F, 3, H, W) in [-1, 1] on `device`."""
    if frames.ndim == 3:
        frames = frames.unsqueeze(0)
    x = frames.to(device=device, non_blocking=True).permute(0, 3, 1, 2).to(dtype)
    return x.div_(127.5).sub_(1.0)


def to_uint8(y: torch.Tensor) -> torch.Tensor:
    """float (F, 3, H, W) in [-1, 1] -> uint8 (F, H, W, 3) on y's device (values clamped; a
    channels-last view, no copy to the host: the device frame step writes it into its buffer)."""
    return ((y.float() + 1.0) * 127.5).clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1)


def to_uint8_frames(y: torch.Tensor) -> torch.Tensor:
    """float (F, 3, H, W) in [-1, 1] -> uint8 (F, H, W, 3) on the CPU (values clamped)."""
    return to_uint8(y).contiguous().cpu()
