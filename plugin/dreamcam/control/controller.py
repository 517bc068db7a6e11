"""Applies the live knobs to the engine, on the engine thread, between frames.

How each knob applies is the knob table's (`dreamcam.knobs`, `Param.apply`):
- `Apply.FENCE` knobs (strength, guidance, delta): the engine setter the table names, at the
  next frame (tensors filled in place).
- `Apply.FADE` knobs, by code here: prompt and negative_prompt are encoded by a worker thread
  (the text encoder never runs on the frame path), then cross-faded in embedding space over
  `transition` seconds (0 = at once); the new seed's noise is slerped in over `transition`
  seconds (variance kept).
- `Apply.STORE` knobs write nothing to the engine: `transition` and `bypass` (`Controller.bypass`,
  read by whoever runs the frames) are kept here; `preset` and `cue` were expanded into values by
  their writer.
- Continuous knobs (floats an engine setter applies: strength, guidance, delta, ...) glide to a
  new value over `slew` seconds (`dreamcam.control.slew`); discrete ones apply at once.
- On the beat (`dreamcam.control.beat`): with `quantize` on, a scene change (prompt, seed,
  preset, cue) waits for the next beat or bar of the beat clock; `lfo` swings knobs in time.

Prompt blending: a prompt with `|` is a weighted blend of sub-prompts, each optionally ending in
`:WEIGHT` (a non-negative number; 1 when left out). Weights are relative: they are scaled to
sum to 1. `"a cat:0.7 | a dog:0.3"` is 70 % cat, 30 % dog; `"a cat | a dog"` is half each.
A prompt without `|` is used as written (so `"16:9 film still"` keeps its colon).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dreamcam.control.beat import BeatSync
from dreamcam.control.clock import BeatClock
from dreamcam.control.slew import Slew, gliding_knobs
from dreamcam.engine.prompts import parse_prompt
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS, Apply, ParamStore

log = logging.getLogger(__name__)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation per batch row (t in [0, 1]); keeps Gaussian noise's variance."""
    fa, fb = a.reshape(a.shape[0], -1).float(), b.reshape(b.shape[0], -1).float()
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
    theta = cos.clamp(-1.0, 1.0).acos().unsqueeze(1)
    sin = theta.sin()
    near = sin.abs() < 1e-6  # (almost) parallel rows: a straight line is the same curve
    wa = torch.where(near, torch.full_like(theta, 1.0 - t), ((1.0 - t) * theta).sin() / sin.where(~near, 1.0))
    wb = torch.where(near, torch.full_like(theta, t), (t * theta).sin() / sin.where(~near, 1.0))
    return (wa * fa + wb * fb).reshape(a.shape).to(a.dtype)


@dataclass
class _Encoded:
    request: int
    prompt: str
    negative_prompt: str
    cond: torch.Tensor | None = None
    uncond: torch.Tensor | None = None
    error: str | None = None


class PromptEncoder:
    """A worker thread running `encode(prompt, negative) -> (cond, uncond)` off the frame path.

    Only the newest request is kept: asking again before the worker started drops the older one.
    On a CUDA `device` the worker runs on a CUDA stream of its own: on the default stream its
    kernels would sit in front of the next frame, which waits for that stream. Whoever uses the
    results on another stream calls `record_stream` on them (Controller does).
    """

    def __init__(
        self, encode: Callable[[str, str], tuple[torch.Tensor, torch.Tensor | None]], current: tuple[str, str],
        *, device: torch.device | str | None = None,
    ) -> None:
        self._encode = encode
        cuda = device is not None and torch.device(device).type == "cuda"
        self.stream = torch.cuda.Stream(torch.device(device)) if cuda else None
        self._last_texts = current
        self._cond = threading.Condition()
        self._pending: tuple[int, str, str] | None = None
        self._busy = False
        self._ready: _Encoded | None = None
        self._crash: BaseException | None = None
        self._last_request = 0
        self._stop = False
        self.encode_ms = 0.0  # duration of the last encoding
        self._thread = threading.Thread(target=self._run, name="dreamcam-prompt-encoder", daemon=True)
        self._thread.start()

    def request(self, prompt: str, negative_prompt: str) -> None:
        """Encode this pair next, unless it is the pair asked for last (any thread, never waits)."""
        with self._cond:
            if (prompt, negative_prompt) == self._last_texts:
                return
            self._last_texts = (prompt, negative_prompt)
            self._last_request += 1
            self._pending = (self._last_request, prompt, negative_prompt)
            self._cond.notify_all()

    def take(self) -> _Encoded | None:
        """The newest finished encoding not taken yet, or None; never waits. Re-raises a crash."""
        if self._crash is not None:
            raise RuntimeError("the prompt encoder thread failed") from self._crash
        if self._ready is None:
            return None
        with self._cond:
            ready, self._ready = self._ready, None
        return ready

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every request is encoded; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: (self._pending is None and not self._busy) or self._stop, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stop)
                if self._stop:
                    return
                (req, prompt, negative), self._pending = self._pending, None
                self._busy = True
            try:
                done = self._encode_blend(req, prompt, negative)
            except BaseException as e:  # handed to the engine thread by take()
                self._crash = e
                done = None
            with self._cond:
                if done is not None and req == self._last_request:
                    self._ready = done
                self._busy = False
                self._cond.notify_all()
            if done is None:
                return

    def _encode_blend(self, req: int, prompt: str, negative: str) -> _Encoded:
        if self.stream is None:
            return self._encode_blend_here(req, prompt, negative)
        with torch.cuda.stream(self.stream):
            return self._encode_blend_here(req, prompt, negative)

    def _encode_blend_here(self, req: int, prompt: str, negative: str) -> _Encoded:
        t0 = time.perf_counter()
        try:
            parts = parse_prompt(prompt)
            cond = uncond = None
            for text, w in parts:
                c, u = self._encode(text, negative)
                cond = c * w if cond is None else cond + c * w
                uncond = u if uncond is None else uncond
        except ConfigError as e:
            return _Encoded(req, prompt, negative, error=str(e))
        if cond.is_cuda:  # done before the engine thread reads them on its own stream
            torch.cuda.current_stream(cond.device).synchronize()
        self.encode_ms = (time.perf_counter() - t0) * 1000.0
        return _Encoded(req, prompt, negative, cond, uncond)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)


class _Fade:
    """Progress 0..1 of a cross-fade over `duration` seconds from `t0`."""

    def __init__(self, start: Any, target: Any, t0: float, duration: float) -> None:
        self.start, self.target, self.t0, self.duration = start, target, t0, duration

    def progress(self, now: float) -> float:
        return 1.0 if self.duration <= 0 else min(1.0, max(0.0, (now - self.t0) / self.duration))


class Controller:
    """Takes the latest changes from the store and hands them to the engine, smoothly.

    Call `apply()` from the engine thread between frames; nothing else touches the engine. It
    never waits: a prompt still being encoded keeps the current embeddings until it is ready.

    Args:
        engine: a prepared `StreamEngine` (or anything with its setters and buffers).
        store: the parameter store.
        clock: seconds, monotonic (default `time.monotonic`); transitions are timed with it.
        beats: the beat clock for quantised changes and LFOs (`dreamcam.control.clock`); by
            default a fixed-tempo one at the `bpm` knob, on `clock`.
    """

    def __init__(self, engine: Any, store: ParamStore, *, clock: Callable[[], float] = time.monotonic,
                 beats: BeatClock | None = None) -> None:
        self.engine = engine
        self.store = store
        self.bypass = bool(store.get("bypass"))
        self.transition = float(store.get("transition"))
        self.rejected_prompts = 0
        self._clock = clock
        u = engine.uncond_rows
        embeds = engine.prompt_embeds
        self._cond = embeds[u : u + 1].clone()  # the embeddings the engine holds now
        self._uncond = embeds[:1].clone() if u else None
        self._text = (getattr(engine, "prompt", store.get("prompt")), getattr(engine, "negative_prompt", ""))
        self._prompt_fade: _Fade | None = None
        self._seed_fade: _Fade | None = None
        self._encoder = PromptEncoder(engine.encode_prompt, self._text, device=getattr(engine, "device", None))
        self._closed = False
        values = store.snapshot()
        self._slew = Slew({n: values[n] for n in gliding_knobs()}, values["slew"])
        self.beats = beats if beats is not None else BeatClock(values["bpm"], time=clock)
        self.sync = BeatSync(self.beats, values)  # quantised changes and LFOs
        # the knobs applied by code here; the table's other knobs go to the engine setter it names
        self._appliers: dict[str, Callable[[Any], None]] = {
            "transition": self._set_transition,
            "bypass": self._set_bypass,
            "prompt": self._request_texts,
            "negative_prompt": self._request_texts,
            "seed": self._start_seed,
            "slew": self._slew.retime,
        }
        for p in PARAMS.values():
            if p.apply is not Apply.STORE and p.name not in self._appliers:
                if not callable(getattr(engine, p.setter or "", None)):
                    raise TypeError(f"knob {p.name!r} is applied by engine.{p.setter}(), which "
                                    f"{type(engine).__name__} lacks: name an engine setter in the knob table")
        # encoding starts on the writer's thread as soon as a prompt arrives, not at the next frame
        store.subscribe(self._on_change)

    def _on_change(self, name: str, value: Any) -> None:
        if name in ("prompt", "negative_prompt") and not self._closed:
            self._request_texts(value)

    # ------------------------------------------------------------------ the engine thread

    @torch.no_grad()
    def apply(self, fence: Callable[[], None] | None = None) -> None:
        """Apply pending changes and advance running transitions (engine thread, between frames).

        `fence` (the backend's, where frames run on streams of their own) is called first when
        this call will write to the engine, so no write reaches a frame already running. When
        nothing changes, as on most frames, it is not called: a fence on every frame would make
        each frame wait for the one ahead and undo the overlap of frames in flight."""
        changes = self.store.take_changes()
        ready = self._encoder.take()
        now = self._clock()
        changes, ready = self.sync.gate(changes, ready, now)
        writes = any(PARAMS[name].apply is not Apply.STORE for name in changes)
        if fence is not None and (writes or ready is not None or self.transitioning):
            fence()
        if changes:
            self._apply_changes(changes)
        if ready is not None:
            self._start_prompt(ready)
        if self._prompt_fade is not None:
            self._step_prompt(now)
        if self._seed_fade is not None:
            self._step_seed(now)
        if self._slew.active or self.sync.active:
            values = self._slew.step(now) if self._slew.active else {}
            values.update(self.sync.modulate(self._slew.values, now))
            for name, value in values.items():
                getattr(self.engine, PARAMS[name].setter)(value)

    def _apply_changes(self, changes: dict[str, Any]) -> None:
        # what is kept here first (a seed fade starting in the same change uses the new
        # transition), then the rest in table order
        for p in sorted(PARAMS.values(), key=lambda p: p.apply is not Apply.STORE):
            if p.name not in changes:
                continue
            applier = self._appliers.get(p.name)
            if p.name in self._slew.values:
                self._slew.target(p.name, changes[p.name], self._clock())
            elif applier is not None:
                applier(changes[p.name])
            elif p.setter is not None:
                try:
                    getattr(self.engine, p.setter)(changes[p.name])
                except ConfigError as e:  # in range, but not possible with this engine/backend: say so, run on
                    log.warning("%s %r not applied: %s", p.name, changes[p.name], e)

    def _set_transition(self, seconds: float) -> None:
        self.transition = float(seconds)

    def _set_bypass(self, on: bool) -> None:
        self.bypass = bool(on)

    def _request_texts(self, _text: str) -> None:
        """Encode the stored prompt pair (usually asked for already, when it was stored)."""
        values = self.store.snapshot()
        self._encoder.request(values["prompt"], values["negative_prompt"])

    def _start_prompt(self, enc: _Encoded) -> None:
        if enc.error is not None:
            self.rejected_prompts += 1
            log.warning("prompt %r not used: %s; keeping the current one", enc.prompt[:80], enc.error)
            return
        target_uncond = enc.uncond if self._uncond is not None else None
        if enc.cond.is_cuda:  # made on the encoder's stream, used on this one for the whole fade
            for t in (enc.cond, enc.uncond):
                if t is not None:
                    t.record_stream(torch.cuda.current_stream(t.device))
        self._prompt_fade = _Fade(
            (self._cond.clone(), None if self._uncond is None else self._uncond.clone()),
            (enc.cond.to(self._cond.dtype), None if target_uncond is None else target_uncond.to(self._cond.dtype)),
            self._clock(),
            self.sync.fade_seconds(self.transition),
        )
        self._text = (enc.prompt, enc.negative_prompt)

    def _step_prompt(self, now: float) -> None:
        f = self._prompt_fade
        w = f.progress(now)
        (c0, u0), (c1, u1) = f.start, f.target
        self._cond.copy_(c1 if w >= 1.0 else torch.lerp(c0, c1, w))
        if self._uncond is not None and u1 is not None:
            self._uncond.copy_(u1 if w >= 1.0 else torch.lerp(u0, u1, w))
        self.engine.set_prompt_embeds(self._cond, self._uncond)
        if w >= 1.0:
            self._prompt_fade = None
            self.engine.prompt, self.engine.negative_prompt = self._text

    def _start_seed(self, seed: int) -> None:
        e = self.engine
        if self.transition <= 0:
            self._seed_fade = None
            e.set_seed(seed)
            return
        seconds = self.sync.fade_seconds(self.transition)
        self._seed_fade = _Fade(e.init_noise.clone(), (seed, e.noise_for_seed(seed)), self._clock(), seconds)

    def _step_seed(self, now: float) -> None:
        f = self._seed_fade
        w = f.progress(now)
        seed, noise = f.target
        if w >= 1.0:
            self._seed_fade = None
            self.engine.set_seed(seed)  # the exact noise, and engine.seed, of the new seed
        else:
            self.engine.init_noise = slerp(f.start, noise, w)

    # ------------------------------------------------------------------ any thread

    @property
    def transitioning(self) -> bool:
        """True while a prompt or seed cross-fade, a knob's glide or an LFO is running."""
        return self._prompt_fade is not None or self._seed_fade is not None or self._slew.active or self.sync.active

    @property
    def encode_ms(self) -> float:
        """Milliseconds the last prompt encoding took (on the encoder thread)."""
        return self._encoder.encode_ms

    def wait_encoded(self, timeout: float = 10.0) -> bool:
        """Wait until the prompts stored so far are encoded (the next `apply` starts their fade).

        For start-up and tests; the frame loop never calls it. False on timeout.
        """
        return self._encoder.wait_idle(timeout)

    def close(self) -> None:
        """Stop the encoder thread; safe to call more than once."""
        self._closed = True
        self._encoder.close()

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Bypass:
    """A controller that holds the runner in bypass: no engine, input straight to the outputs
    (loop benchmarks, tests of capture and output)."""

    bypass = True

    def apply(self, fence: Callable[[], None] | None = None) -> None:
        pass

    def close(self) -> None:
        pass
