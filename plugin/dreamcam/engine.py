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

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dreamcam.errors import ConfigError
from dreamcam.models import _quiet_imports, move_pipeline, quiet_loggers
from dreamcam.schedule import (  # noqa: F401  (strength_to_t_index_list, check_t_index_list: re-exported)
    check_finite,
    check_size,
    check_t_index_list,
    strength_to_t_index_list,
    t_index_list_to_strength,
)
from dreamcam.similarity import SimilarityFilter

log = logging.getLogger(__name__)

CFG_TYPES = ("none", "self", "initialize", "full")


class StreamEngine:
    """Few-step img2img / txt2img over a stream of frames, StreamDiffusion style.

    Args:
        pipe: a diffusers `StableDiffusionPipeline` (SD 1.x / 2.x / sd-turbo architecture).
        t_index_list: indices into the `num_inference_steps` LCM schedule, strictly increasing;
            one UNet step per index. Lower indices are noisier (more change).
        width, height: engine resolution in pixels, multiples of 8.
        cfg_type: residual classifier-free guidance: "none", "self", "initialize" or "full".
        frame_buffer_size: camera frames per UNet batch (F).
        use_denoising_batch: all steps of consecutive frames in one UNet call (the stream batch).
        do_add_noise: re-noise intermediate latents between steps.
        device, dtype: where and in which precision to run (default: the pipeline's).
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
    ) -> None:
        # 1. Check inputs
        if cfg_type not in CFG_TYPES:
            raise ConfigError(f"cfg_type must be one of {', '.join(CFG_TYPES)}; got {cfg_type!r}")
        if not isinstance(frame_buffer_size, int) or frame_buffer_size < 1:
            raise ConfigError(f"frame_buffer_size must be a whole number >= 1, got {frame_buffer_size!r}")
        for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise ConfigError(f"the pipeline has no {part}: pass a diffusers StableDiffusionPipeline")
        self.width = check_size("width", width)
        self.height = check_size("height", height)
        self.t_index_list = check_t_index_list(t_index_list)

        # 2. Components, device and precision
        _quiet_imports()
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

        self.similarity_filter: SimilarityFilter | None = None
        self.prepared = False
        self.num_inference_steps = 50
        self._prev_output: torch.Tensor | None = None

    # ------------------------------------------------------------------ preparation

    @torch.no_grad()
    def prepare(
        self,
        prompt: str = "",
        negative_prompt: str = "",
        num_inference_steps: int = 50,
        guidance_scale: float = 1.2,
        delta: float = 1.0,
        generator: torch.Generator | None = None,
        seed: int = 2,
    ) -> None:
        """Allocate every per-frame tensor and fill it for this prompt, schedule and seed."""
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps must be a whole number >= 1, got {num_inference_steps!r}")
        check_t_index_list(self.t_index_list, num_inference_steps)
        self.num_inference_steps = num_inference_steps
        self.generator = generator if generator is not None else torch.Generator()
        self.generator.manual_seed(int(seed))
        self.seed = int(seed)

        dev, dt = self.device, self.dtype
        s, b = self.denoising_steps_num, self.batch_size
        lat = (4, self.latent_height, self.latent_width)

        # the UNet's input batch; rows [F:] double as the latent buffer of frames in flight
        self._x_batch = torch.zeros((b, *lat), dtype=dt, device=dev)
        self.stock_noise = torch.zeros((b, *lat), dtype=dt, device=dev)
        self._init_noise = torch.empty((b, *lat), dtype=dt, device=dev)
        self._draw_noise(self._init_noise, self.generator)

        # schedule tensors: per batch row (stream batch) or per step (sequential)
        rows = b if self.use_denoising_batch else s
        self._timesteps = torch.zeros(rows, dtype=torch.long, device=dev)
        self.alpha_prod_t_sqrt = torch.zeros((rows, 1, 1, 1), dtype=dt, device=dev)
        self.beta_prod_t_sqrt = torch.zeros_like(self.alpha_prod_t_sqrt)
        self.c_skip = torch.zeros_like(self.alpha_prod_t_sqrt)
        self.c_out = torch.zeros_like(self.alpha_prod_t_sqrt)
        self._alpha_next = torch.ones_like(self.alpha_prod_t_sqrt)
        self._beta_next = torch.ones_like(self.alpha_prod_t_sqrt)
        self._unet_t = torch.zeros(self.unet_batch_size, dtype=torch.long, device=dev)
        self.scheduler.set_timesteps(num_inference_steps, dev)
        self.timesteps = self.scheduler.timesteps.to(dev)
        self._timesteps_host = self.scheduler.timesteps.cpu()  # schedule math on the host: no GPU sync per change

        # live values as tensors, so a change never alters the computation's structure
        self._guidance = torch.ones((), dtype=dt, device=dev)
        self._cfg_on = torch.zeros((), dtype=torch.bool, device=dev)
        self._delta = torch.ones((), dtype=dt, device=dev)

        cond, uncond = self.encode_prompt(prompt, negative_prompt)
        self._embeds = torch.empty((self.unet_batch_size, *cond.shape[1:]), dtype=cond.dtype, device=dev)
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.set_prompt_embeds(cond, uncond)
        self.set_guidance(guidance_scale)
        self.set_delta(delta)
        self._write_schedule(self.t_index_list)
        self._prev_output = None
        self.prepared = True

    def _draw_noise(self, out: torch.Tensor, generator: torch.Generator) -> None:
        s, f = self.denoising_steps_num, self.frame_buffer_size
        lat = (4, self.latent_height, self.latent_width)
        if self.use_denoising_batch and f > 1:
            noise = torch.randn((s, *lat), generator=generator).repeat_interleave(f, dim=0)
        else:
            noise = torch.randn((out.shape[0], *lat), generator=generator)
        self._upload(out, noise)

    def _upload(self, dst: torch.Tensor, host: torch.Tensor) -> None:
        """dst <- host values, without making the host wait for the GPU.

        On CUDA the values go through pinned memory as an async copy on the current stream, which
        fence() has ordered after the frames in flight; a pageable copy would block the host
        until those frames finish. torch's pinned allocator keeps the block until the copy is done.
        """
        host = host.to(dtype=dst.dtype)
        if dst.device.type == "cuda":
            host = host.pin_memory()
        dst.copy_(host, non_blocking=True)

    def _write_schedule(self, t_index_list: Sequence[int]) -> None:
        """Fill the schedule tensors in place for these step indices."""
        sched = self.scheduler
        # all on the host (timesteps, alphas_cumprod and the scalings are CPU values), then uploaded
        sub = [self._timesteps_host[t] for t in t_index_list]
        reps = self.frame_buffer_size if self.use_denoising_batch else 1

        def column(values: list[torch.Tensor]) -> torch.Tensor:
            col = torch.stack(values).view(len(values), 1, 1, 1).to(dtype=self.dtype)
            return torch.repeat_interleave(col, reps, dim=0)

        alphas = sched.alphas_cumprod.cpu()
        self._upload(self.alpha_prod_t_sqrt, column([alphas[t].sqrt() for t in sub]))
        self._upload(self.beta_prod_t_sqrt, column([(1 - alphas[t]).sqrt() for t in sub]))
        scalings = [sched.get_scalings_for_boundary_condition_discrete(t) for t in sub]
        self._upload(self.c_skip, column([torch.as_tensor(c) for c, _ in scalings]))
        self._upload(self.c_out, column([torch.as_tensor(c) for _, c in scalings]))
        self._upload(self._timesteps, torch.repeat_interleave(torch.stack(sub).long(), reps))
        f = self.frame_buffer_size
        if self.use_denoising_batch:
            self._alpha_next[:-f].copy_(self.alpha_prod_t_sqrt[f:])
            self._beta_next[:-f].copy_(self.beta_prod_t_sqrt[f:])
            n = self.uncond_rows if self.cfg_type == "initialize" else 0
            if self.cfg_type == "initialize":
                self._unet_t[:n].copy_(self._timesteps[:f])
                self._unet_t[n:].copy_(self._timesteps)
            elif self.cfg_type == "full":
                self._unet_t[: self.batch_size].copy_(self._timesteps)
                self._unet_t[self.batch_size :].copy_(self._timesteps)
            else:
                self._unet_t.copy_(self._timesteps)
        self.t_index_list = list(t_index_list)

    # ------------------------------------------------------------------ live parameters

    def _require_prepared(self) -> None:
        if not self.prepared:
            raise RuntimeError("call engine.prepare(prompt, ...) before running or changing the engine")

    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str = "") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text embeddings (1, tokens, width) for a prompt, and for the negative prompt when the
        cfg type uses one. A prompt longer than the text encoder takes is truncated (one warning)."""
        if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
            raise ConfigError("prompt and negative_prompt must be strings")
        self._warn_if_truncated(prompt)
        need_uncond = self.uncond_rows > 0
        # our own warning above replaces the per-call ones of diffusers and the tokenizer
        with quiet_loggers(
            "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion", "transformers.tokenization_utils_base"
        ):
            cond, uncond = self.pipe.encode_prompt(
                prompt=prompt,
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=need_uncond,
                negative_prompt=negative_prompt if need_uncond else None,
            )
        return cond, uncond

    def _warn_if_truncated(self, prompt: str) -> None:
        tok = self.pipe.tokenizer
        n = len(tok(prompt, truncation=False, add_special_tokens=True, verbose=False)["input_ids"])
        if n > tok.model_max_length:
            log.warning(
                "prompt is %d tokens; the text encoder takes %d, so the rest is ignored: %r",
                n,
                tok.model_max_length,
                prompt[-60:],
            )

    @torch.no_grad()
    def set_prompt_embeds(self, cond: torch.Tensor, uncond: torch.Tensor | None = None) -> None:
        """Copy (1, tokens, width) embeddings into the engine's buffer; used from the next frame."""
        u = self.uncond_rows
        self._embeds[u:].copy_(cond.to(self._embeds.dtype).expand(self.batch_size, -1, -1))
        if u and uncond is not None:
            self._embeds[:u].copy_(uncond.to(self._embeds.dtype).expand(u, -1, -1))

    @property
    def prompt_embeds(self) -> torch.Tensor:
        """The UNet's encoder_hidden_states: unconditional rows first (full/initialize), then conditional."""
        return self._embeds

    def set_prompt(self, prompt: str) -> None:
        self._require_prepared()
        cond, _ = self.encode_prompt(prompt, "")
        self.set_prompt_embeds(cond)
        self.prompt = prompt

    def set_negative_prompt(self, negative_prompt: str) -> None:
        self._require_prepared()
        if self.uncond_rows:
            _, uncond = self.encode_prompt("", negative_prompt)
            self._embeds[: self.uncond_rows].copy_(uncond.to(self._embeds.dtype).expand(self.uncond_rows, -1, -1))
        self.negative_prompt = negative_prompt

    @torch.no_grad()
    def set_guidance(self, guidance_scale: float) -> None:
        """Guidance > 1 turns RCFG on (for cfg_type other than "none")."""
        g = check_finite("guidance_scale", guidance_scale)
        on = g > 1.0 and self.cfg_type != "none"
        self.guidance_scale = g if self.cfg_type != "none" else 1.0
        self._guidance.fill_(g if on else 1.0)
        self._cfg_on.fill_(on)

    @torch.no_grad()
    def set_delta(self, delta: float) -> None:
        self.delta = check_finite("delta", delta)
        self._delta.fill_(self.delta)

    @torch.no_grad()
    def set_seed(self, seed: int) -> None:
        """Redraw the per-step noise from `seed` into the same buffer."""
        self._require_prepared()
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"seed must be a whole number, got {seed!r}")
        self.seed = int(seed)
        self._draw_noise(self._init_noise, torch.Generator().manual_seed(self.seed))

    def noise_for_seed(self, seed: int) -> torch.Tensor:
        """The init noise `set_seed(seed)` would give, without changing the engine."""
        out = torch.empty_like(self._init_noise)
        self._draw_noise(out, torch.Generator().manual_seed(int(seed)))
        return out

    def set_strength(self, strength: float) -> None:
        """0..1: how far each frame moves from its input (see `strength_to_t_index_list`)."""
        self._require_prepared()
        self.set_t_index_list(strength_to_t_index_list(strength, self.denoising_steps_num, self.num_inference_steps))

    @torch.no_grad()
    def set_t_index_list(self, t_index_list: Sequence[int]) -> None:
        self._require_prepared()
        idx = check_t_index_list(t_index_list, self.num_inference_steps)
        if len(idx) != self.denoising_steps_num:
            raise ConfigError(
                f"the engine runs {self.denoising_steps_num} steps; t_index_list must keep that length, got {idx}"
            )
        self._write_schedule(idx)

    @property
    def strength(self) -> float:
        return t_index_list_to_strength(self.t_index_list, self.num_inference_steps)

    @property
    def init_noise(self) -> torch.Tensor:
        return self._init_noise

    @init_noise.setter
    def init_noise(self, value: torch.Tensor) -> None:
        if tuple(value.shape) != tuple(self._init_noise.shape):
            raise ConfigError(f"init_noise must have shape {tuple(self._init_noise.shape)}, got {tuple(value.shape)}")
        with torch.no_grad():
            self._init_noise.copy_(value)

    @property
    def x_t_latent_buffer(self) -> torch.Tensor | None:
        """Latents of the frames still in flight (stream batch with more than one step)."""
        if self.use_denoising_batch and self.denoising_steps_num > 1:
            return self._x_batch[self.frame_buffer_size :]
        return None

    def enable_similar_image_filter(self, threshold: float = 0.98, max_skip_frame: int = 10) -> None:
        self.similarity_filter = SimilarityFilter(threshold, max_skip_frame, seed=getattr(self, "seed", 0))

    def disable_similar_image_filter(self) -> None:
        self.similarity_filter = None

    # ------------------------------------------------------------------ the frame step

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
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
        pred = self.unet(x_in, t, encoder_hidden_states=self._embeds, return_dict=False)[0]

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

    def predict_x0_batch(self, x_t_latent: torch.Tensor) -> torch.Tensor:
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
        if sim is not None and sim.should_skip(x) and self._prev_output is not None:
            return self._prev_output
        y = self.frame_step(x)
        if sim is not None:
            self._prev_output = y
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
        y = self.decode_image(self.predict_x0_batch(latent.to(self.device, self.dtype)))
        out = to_uint8_frames(y).numpy()
        return out[0] if f == 1 else out


def to_model_input(frames: torch.Tensor, device, dtype) -> torch.Tensor:
    """uint8 (H, W, 3) or (F, H, W, 3) -> float (F, 3, H, W) in [-1, 1] on `device`."""
    if frames.ndim == 3:
        frames = frames.unsqueeze(0)
    x = frames.to(device=device, non_blocking=True).permute(0, 3, 1, 2).to(dtype)
    return x.div_(127.5).sub_(1.0)


def to_uint8_frames(y: torch.Tensor) -> torch.Tensor:
    """float (F, 3, H, W) in [-1, 1] -> uint8 (F, H, W, 3) on the CPU (values clamped)."""
    return ((y.float() + 1.0) * 127.5).clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()
