"""The engine's per-prompt state, the base of `StreamEngine` (engine/stream.py owns the frame step).

`prepare` allocates every tensor the frame step reads (the UNet batch and latent buffer, the
init and residual noise, the schedule columns, the prompt embeddings, the live guidance/delta
values) and fills them for one prompt, schedule and seed. The live setters (prompt, guidance,
delta, seed, strength / t_index_list, init_noise) then change those tensors in place between
frames, never reallocating them: a compiled or captured frame step keeps reading the same buffers.

Shapes and names (S steps, F frames per call, B batch rows) are described in engine/stream.py; the
fixed structure (device, dtype, scheduler, batch sizes, cfg type) is set by
`StreamEngine.__init__` before anything here runs.

SDXL (an SDXL pipeline: two text encoders, a UNet with addition_embed_type "text_time"): the UNet
also takes `added_cond_kwargs`, the pooled text embedding of the second text encoder
(`text_embeds`, (rows, P)) and six time ids (`time_ids`, (rows, 6): original size, crop top-left,
target size, all (height, width) of the engine, as diffusers' SDXL pipelines pass for an image
of that size). Both are buffers of the UNet batch's rows (unconditional rows first, as the token
embeddings), filled in place like every other tensor here. `unet_conditioning` is the one place
that says what every UNet call of the frame step passes.

So that whatever blends or fades prompt embeddings (prompt blends, cross-fades in
`control.controller`) treats the pooled embedding exactly like the token embeddings, an SDXL
prompt's embeddings travel as one tensor: `encode_prompt` returns the token embeddings
(1, 77, W) with the pooled embedding appended as extra row(s) (zero-padded to width W), and
`set_prompt_embeds` splits them into the two buffers (`pack_prompt_embeds`, `split_prompt_embeds`).
Weighted sums and lerps of packed tensors are the same sums and lerps of both parts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS
from dreamcam.models.quiet import quiet_loggers
from dreamcam.engine.schedule import check_finite, check_t_index_list, strength_to_t_index_list, t_index_list_to_strength
from dreamcam.engine.similarity import SimilarityFilter

log = logging.getLogger(__name__)

SDXL_TIME_IDS = 6  # original (h, w), crop top-left (y, x), target (h, w)
_ENCODE_LOGGERS = (
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
    "diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl",
    "transformers.tokenization_utils_base",
)


class EngineState:
    """Allocation (`prepare`) and live changes of the tensors the frame step reads; a base class
    of `StreamEngine`, whose `__init__` sets the engine structure used here."""

    # ------------------------------------------------------------------ preparation

    @torch.no_grad()
    def prepare(
        self,
        prompt: str = "",
        negative_prompt: str = "",
        num_inference_steps: int = 50,
        guidance_scale: float = PARAMS["guidance"].default,
        delta: float = PARAMS["delta"].default,
        generator: torch.Generator | None = None,
        seed: int = PARAMS["seed"].default,
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
        self._timesteps_host = self.scheduler.timesteps.cpu()  # schedule math on the host: no GPU sync per change

        # live values as tensors, so a change never alters the computation's structure
        self._guidance = torch.ones((), dtype=dt, device=dev)
        self._cfg_on = torch.zeros((), dtype=torch.bool, device=dev)
        self._delta = torch.ones((), dtype=dt, device=dev)

        cond, uncond = self.encode_prompt(prompt, negative_prompt)
        tokens = cond.shape[1] - (self._pooled_layout()[1] if self.is_sdxl else 0)
        self._embeds = torch.empty((self.unet_batch_size, tokens, cond.shape[2]), dtype=cond.dtype, device=dev)
        self._unet_conditioning: dict[str, Any] = {"encoder_hidden_states": self._embeds}
        if self.is_sdxl:
            self._allocate_added_cond(cond.dtype)
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.set_prompt_embeds(cond, uncond)
        self.set_guidance(guidance_scale)
        self.set_delta(delta)
        self._write_schedule(self.t_index_list)
        control = getattr(self, "control", None)
        if control is not None:
            roll = self.use_denoising_batch and s > 1
            control.allocate(b, self.frame_buffer_size, roll, self.height, self.width, dev, dt)
        if self.similarity_filter is not None:  # an output of the old prompt is no frame to repeat
            self.similarity_filter.keep(None)
        self.latent_feedback.reset()  # nor is a latent of the old prompt one to feed back
        self.prepared = True

    def _allocate_added_cond(self, dtype: torch.dtype) -> None:
        """SDXL's added conditioning buffers (pooled text embeddings, time ids) for every UNet row;
        the time ids are those of the engine's size, fixed for its life."""
        rows, dev = self.unet_batch_size, self.device
        width, _ = self._pooled_layout()
        self._text_embeds = torch.zeros((rows, width), dtype=dtype, device=dev)
        self._time_ids = torch.empty((rows, SDXL_TIME_IDS), dtype=dtype, device=dev)
        self._upload(self._time_ids, self.time_ids().expand(rows, -1))
        self._unet_conditioning["added_cond_kwargs"] = {"text_embeds": self._text_embeds, "time_ids": self._time_ids}

    def time_ids(self) -> torch.Tensor:
        """SDXL's time ids for one row at the engine size, (1, 6) on the host: original size,
        crop top-left (0, 0) and target size, each (height, width), as diffusers' SDXL img2img
        pipeline computes them for an image of the engine's size."""
        h, w = self.height, self.width
        return torch.tensor([[h, w, 0, 0, h, w]], dtype=self.dtype)

    def _pooled_layout(self) -> tuple[int, int]:
        """SDXL: the pooled embedding's width P and the rows it takes when packed after the token
        embeddings (width W = the UNet's cross-attention width): ceil(P / W)."""
        unet_cfg = self.pipe.unet.config
        width = int(self.pipe.text_encoder_2.config.projection_dim)
        time_dim = int(unet_cfg.addition_time_embed_dim)
        n_ids = (int(unet_cfg.projection_class_embeddings_input_dim) - width) / time_dim
        if n_ids != SDXL_TIME_IDS:
            raise ConfigError(
                f"this SDXL UNet takes {n_ids:g} time ids, not the {SDXL_TIME_IDS} of SDXL and SDXL-Turbo "
                "(a refiner with aesthetic scores?): dreamcam runs SDXL base-style models"
            )
        return width, math.ceil(width / int(unet_cfg.cross_attention_dim))

    def pack_prompt_embeds(self, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """SDXL: token embeddings (N, T, W) and pooled embeddings (N, P) -> one (N, T + k, W)
        tensor, the pooled embedding zero-padded into the k extra rows (see the module doc)."""
        width, k = self._pooled_layout()
        n, _, w = tokens.shape
        extra = torch.zeros((n, k * w), dtype=tokens.dtype, device=tokens.device)
        extra[:, :width] = pooled.to(tokens.dtype)
        return torch.cat([tokens, extra.view(n, k, w)], dim=1)

    def split_prompt_embeds(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL: the inverse of `pack_prompt_embeds`: (N, T + k, W) -> tokens (N, T, W), pooled (N, P)."""
        width, k = self._pooled_layout()
        tokens = getattr(self, "_embeds", None)
        want = (None if tokens is None else tokens.shape[1] + k, int(self.pipe.unet.config.cross_attention_dim))
        if packed.ndim != 3 or (want[0] is not None and packed.shape[1] != want[0]) or packed.shape[2] != want[1]:
            raise ConfigError(
                f"SDXL prompt embeddings are (1, {want[0] or 'tokens + ' + str(k)}, {want[1]}): the token embeddings "
                f"with the pooled embedding in the last {k} row(s); got {tuple(packed.shape)}: pass what "
                "engine.encode_prompt returns, or engine.pack_prompt_embeds(tokens, pooled)"
            )
        return packed[:, :-k], packed[:, -k:].reshape(packed.shape[0], -1)[:, :width]

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
        cfg type uses one. A prompt longer than the text encoder takes is truncated (one warning).

        SDXL: both text encoders' penultimate hidden states side by side (diffusers' SDXL
        `encode_prompt`), with the second encoder's pooled embedding packed after them (see the
        module doc); an empty negative prompt is zeros where the model says so
        (force_zeros_for_empty_prompt), as in diffusers' SDXL pipelines without a negative prompt."""
        if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
            raise ConfigError("prompt and negative_prompt must be strings")
        self._warn_if_truncated(prompt)
        need_uncond = self.uncond_rows > 0
        # our own warning above replaces the per-call ones of diffusers and the tokenizer
        with quiet_loggers(*_ENCODE_LOGGERS):
            if self.is_sdxl:
                cond, uncond, pooled, uncond_pooled = self.pipe.encode_prompt(
                    prompt=prompt,
                    device=self.device,
                    num_images_per_prompt=1,
                    do_classifier_free_guidance=need_uncond,
                    negative_prompt=(negative_prompt or None) if need_uncond else None,
                )
                cond = self.pack_prompt_embeds(cond, pooled)
                return cond, (None if uncond is None else self.pack_prompt_embeds(uncond, uncond_pooled))
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
        """Copy (1, tokens, width) embeddings (as `encode_prompt` returns them; SDXL: packed with
        the pooled embedding) into the engine's buffers; used from the next frame."""
        u = self.uncond_rows
        self._write_prompt_rows(u, self.unet_batch_size, cond)
        if u and uncond is not None:
            self._write_prompt_rows(0, u, uncond)

    def _write_prompt_rows(self, start: int, stop: int, embeds: torch.Tensor) -> None:
        n = stop - start
        if not self.is_sdxl:
            self._embeds[start:stop].copy_(embeds.to(self._embeds.dtype).expand(n, -1, -1))
            return
        tokens, pooled = self.split_prompt_embeds(embeds)
        self._embeds[start:stop].copy_(tokens.to(self._embeds.dtype).expand(n, -1, -1))
        self._text_embeds[start:stop].copy_(pooled.to(self._text_embeds.dtype).expand(n, -1))

    @property
    def prompt_embeds(self) -> torch.Tensor:
        """The embeddings of every UNet row, unconditional rows first (full/initialize), then
        conditional, in `encode_prompt`'s layout: the UNet's encoder_hidden_states buffer itself;
        SDXL: a packed copy of it and the pooled embeddings (the buffers are in `unet_conditioning`)."""
        if self.is_sdxl:
            return self.pack_prompt_embeds(self._embeds, self._text_embeds)
        return self._embeds

    @property
    def unet_conditioning(self) -> dict[str, Any]:
        """The keyword arguments every UNet call of the frame step passes, all pre-allocated
        buffers updated in place: `encoder_hidden_states` (rows, 77, W), and for SDXL
        `added_cond_kwargs` {"text_embeds": (rows, P), "time_ids": (rows, 6)}. A call that needs
        the same conditioning (an SDXL ControlNet) passes these same tensors."""
        return self._unet_conditioning

    @property
    def added_cond_kwargs(self) -> dict[str, torch.Tensor] | None:
        """SDXL's added conditioning buffers (see `unet_conditioning`); None for SD 1.x / 2.x."""
        return self._unet_conditioning.get("added_cond_kwargs")

    def set_prompt(self, prompt: str) -> None:
        self._require_prepared()
        cond, _ = self.encode_prompt(prompt, "")
        self.set_prompt_embeds(cond)
        self.prompt = prompt

    def set_negative_prompt(self, negative_prompt: str) -> None:
        self._require_prepared()
        if self.uncond_rows:
            _, uncond = self.encode_prompt("", negative_prompt)
            self._write_prompt_rows(0, self.uncond_rows, uncond)
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
    def set_feedback(self, feedback: float) -> None:
        """0..FEEDBACK_MAX: how much of the previous frame's denoised latent each frame starts
        from (engine/feedback.py); 0 = off (the frame step skips the work, unless a captured graph holds it)."""
        self.latent_feedback.set_value(feedback)

    @torch.no_grad()
    def set_smoothing(self, smoothing: float) -> None:
        """0..SMOOTHING_MAX: how much of the smoothed camera latents before it each frame's camera
        latent is blended with (engine/feedback.py); 0 = off (skipped, unless a captured graph holds it)."""
        self.latent_feedback.set_smoothing(smoothing)

    @torch.no_grad()
    def set_motion_guard(self, guard: float) -> None:
        """0..1: how readily a scene cut or fast motion drops smoothing and feedback to 0 for a moment; 0 = never."""
        self.latent_feedback.set_guard(guard)

    @property
    def feedback(self) -> float:
        return self.latent_feedback.value

    @property
    def smoothing(self) -> float:
        return self.latent_feedback.smoothing

    @property
    def motion_guard(self) -> float:
        return self.latent_feedback.guard

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

    def carried_state(self) -> tuple[torch.Tensor, ...]:
        """The tensors a frame writes and the next frame reads: the stream batch's latents
        (B, 4, h, w), the RCFG residual noise (B, 4, h, w) and the init noise (B, 4, h, w; the
        sequential path re-seeds it from each frame), then latent feedback's (the previous
        frame's latent, the motion gate and thumbnail, ...: `LatentFeedback.state`). The live
        tensors, not copies: a backend copies them to undo its warm-up frames
        (`backends.compiled.step.StateSnapshot`)."""
        self._require_prepared()
        return (self._x_batch, self.stock_noise, self._init_noise, *self.latent_feedback.state())

    # ------------------------------------------------------------------ ControlNets (engine/controlnet.py)

    def set_control_scale(self, scale: float) -> None:
        """The first ControlNet's scale (0 = off: in eager mode it is not run at all)."""
        self._control_set(0, "scale", scale)

    def set_control_scale_2(self, scale: float) -> None:
        self._control_set(1, "scale", scale)

    def set_control_scale_3(self, scale: float) -> None:
        self._control_set(2, "scale", scale)

    def set_preprocessor(self, name: str) -> None:
        """Which of the first ControlNet's loaded preprocessors runs ("" = the first loaded)."""
        self._control_set(0, "preprocessor", name)

    def set_preprocessor_2(self, name: str) -> None:
        self._control_set(1, "preprocessor", name)

    def set_preprocessor_3(self, name: str) -> None:
        self._control_set(2, "preprocessor", name)

    @torch.no_grad()
    def _control_set(self, index: int, what: str, value) -> None:
        # a live knob for a ControlNet that is not loaded, or a preprocessor that is not: said
        # once per knob, and the frame goes on as it was
        control = getattr(self, "control", None)
        try:
            if control is None:
                raise ConfigError("no ControlNet is loaded (--controlnet MODEL)")
            if what == "scale":
                control.set_scale(index, float(value))
            else:
                control.set_preprocessor(index, str(value))
        except ConfigError as e:
            said = self.__dict__.setdefault("_control_warned", set())
            if (index, what, str(e)) not in said:
                said.add((index, what, str(e)))
                log.warning("ControlNet %d %s %r not used: %s", index + 1, what, value, e)

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
