"""Which side sets the live loop's pace, and what to change when it is the engine.

While the source delivers frames faster than the engine turns them out (`engine_bound`, the
test the runner also uses to decide whether to wait for the next capture), frames
are dropped and only a faster engine raises the output rate. `PaceWatch` sees this in the status
that the runner reports every half second and, once it has held for `ENGINE_BOUND_FOR_S`, names
the flags that help on this backend (`advice`). It says so once a run: a webcam in front of a
fast engine never sees it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

ENGINE_BOUND_RATIO = 1.1  # input fps over this times the output fps: the engine sets the pace
ENGINE_BOUND_FOR_S = 5.0  # ... for this long before it is said


def engine_bound(input_fps: float, output_fps: float) -> bool:
    """The engine, not the source, sets the pace: frames come in faster than they go out (by more
    than the source's own jitter). False while either rate is unknown (0: a start, a stop)."""
    return input_fps > 0 and output_fps > 0 and input_fps > ENGINE_BOUND_RATIO * output_fps

# what each mode buys, in the live loop at 512x512 with 1 step on a data-centre GPU (docs/performance.md)
_PARALLEL_GAIN = "about a sixth more frames a second on a fast GPU, same images"
_STAGES_GAIN = "about a tenth more frames a second on a fast GPU, same images"


def advice(backend: Any, engine: Any) -> str:
    """What raises the engine's frame rate on this backend and engine set-up, as flags to add."""
    # lazy: the runner imports this module for engine_bound, and must not load torch with it
    from dreamcam.backends.compiled.parallel import carries_state

    smaller = f"a smaller --width/--height (now {engine.width}x{engine.height})"
    steps = engine.denoising_steps_num
    fewer = f" or fewer --steps (now {steps})" if steps > 1 else ""
    generic = f"{smaller}{fewer}"
    name = getattr(backend, "name", "")
    if name == "compiled":
        knobs = getattr(backend, "knobs", {}) or {}
        if knobs.get("parallel_frames") or knobs.get("overlap_stages"):
            return generic
        if carries_state(engine) is None:
            return (f"--parallel-frames --fuse-qkv runs the two frames in flight side by side ({_PARALLEL_GAIN}); "
                    f"else {generic}")
        if steps == 1:
            return (f"--overlap-stages --fuse-qkv runs the tiny VAE beside the UNet ({_STAGES_GAIN}; "
                    f"--parallel-frames would need --cfg none or full, as this --cfg carries each frame's "
                    f"noise to the next); else {generic}")
        return generic
    if name == "eager" and getattr(engine.device, "type", "cpu") == "cuda":
        return (f"--backend compiled is several times as fast as eager on a GPU (where it cannot run, it says "
                f"why in one line); else {generic}")
    return generic


class PaceWatch:
    """A status callback (`Runner(on_status=...)`) that says once when the engine sets the pace.

    Args:
        say: writes one message (the CLI's `say`, after breaking the live status line).
        advice: what to change, computed only when it is said (`advice(backend, engine)`).
        after_s: how long the engine must set the pace without a break before it is said.
        clock: the time source (tests pass their own).
    """

    def __init__(self, say: Callable[[str], None], advice: Callable[[], str], *,
                 after_s: float = ENGINE_BOUND_FOR_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._say, self._advice = say, advice
        self.after_s, self._clock = after_s, clock
        self._since: float | None = None  # when the engine began to set the pace (None: it does not)
        self.said: str | None = None

    def __call__(self, st: dict) -> None:
        if self.said is not None:
            return
        out, src = float(st.get("fps") or 0.0), float(st.get("input_fps") or 0.0)
        bound = engine_bound(src, out) and not st.get("bypass") and not st.get("signal_lost")
        now = self._clock()
        if not bound:
            self._since = None
            return
        if self._since is None:
            self._since = now
        elif now - self._since >= self.after_s:
            self.said = (f"the engine sets the pace ({out:.0f} fps out of {src:.0f} fps in; the rest are dropped). "
                         f"For more fps: {self._advice()}")
            self._say(self.said)


def tee(*callbacks: Callable[[dict], None]) -> Callable[[dict], None]:
    """One status callback that calls each of `callbacks` in turn."""

    def each(st: dict) -> None:
        for cb in callbacks:
            cb(st)

    return each
