"""On the beat: quantised scene changes and tempo-synced LFOs, for the controller.

`BeatSync` sits between the store's changes and the controller (`Controller.apply`, engine
thread): with `quantize` at beat or bar, a change of prompt, negative prompt, seed, preset or
cue, with everything that came with it (a preset's strength, ...), is held until the next beat
or bar of the beat clock (`dreamcam.control.clock`) and lands on the first frame at or after it;
the prompt's encoding, ready before, is held with it. `transition` then counts beats. Other
changes (a fader) pass at once. It also runs the `lfo` knob's LFOs over the knobs' own values.
"""

from __future__ import annotations

import logging
from typing import Any

from dreamcam.control.clock import QUANTA, BeatClock
from dreamcam.control.lfo import Lfo, parse_lfos
from dreamcam.errors import ConfigError

log = logging.getLogger(__name__)

_EPS_S = 1e-6  # a frame on the boundary, give or take float rounding, is on it
SCENE_KNOBS = ("prompt", "negative_prompt", "seed", "preset", "cue")  # what quantize holds for the beat


class BeatSync:
    """Holds scene changes for the beat and computes LFO values.

    Args:
        clock: the beat clock.
        values: the store's values now (bpm, quantize, lfo).
    """

    def __init__(self, clock: BeatClock, values: dict[str, Any]) -> None:
        self.clock = clock
        self.quantum = QUANTA[values.get("quantize", "off")]
        self.lfos: dict[str, Lfo] = {}
        self._restore: set[str] = set()  # knobs whose LFO stopped: written back to their own value once
        self._held: dict[str, Any] | None = None
        self._held_ready: Any = None
        self.due: float | None = None  # when the held change lands
        self.landed_at: float | None = None  # when the last held change landed (clock time)
        if values.get("bpm") is not None and clock.link is None:
            clock.set_bpm(float(values["bpm"]))
        self._set_lfos(values.get("lfo", ""))

    def gate(self, changes: dict[str, Any], ready: Any, now: float) -> tuple[dict[str, Any], Any]:
        """The changes (and prompt encoding) to apply at `now`: scene changes wait for the next
        boundary while quantising; everything held lands on the first call at or after it."""
        if "quantize" in changes:  # decides whether this very change waits
            self.quantum = QUANTA[changes["quantize"]]
        if self.quantum and any(k in changes for k in SCENE_KNOBS):
            if self._held is None:
                self._held, self.due = {}, self.clock.next_boundary(now, self.quantum)
            self._held.update(changes)  # a preset's tempo and LFOs land with it
            changes = {}
        if self._held is not None:
            if ready is not None:  # the held prompt's encoding (the encoder keeps only the newest)
                self._held_ready, ready = ready, None
            if not self.quantum or now >= self.due - _EPS_S:
                changes = {**self._held, **changes}
                ready, self._held, self._held_ready, self.due = self._held_ready, None, None, None
                self.landed_at = now
        if "bpm" in changes:
            self.clock.set_bpm(float(changes["bpm"]), now)
        if "lfo" in changes:
            self._set_lfos(changes["lfo"])
        return changes, ready

    def fade_seconds(self, transition: float) -> float:
        """A cross-fade's length: `transition` seconds, or beats while quantising."""
        return self.clock.seconds(transition) if self.quantum else transition

    def modulate(self, base: dict[str, float], now: float) -> dict[str, float]:
        """Values to write at `now`: each LFO's knob swung around its own value in `base`, and
        once, the own value of a knob whose LFO stopped."""
        out = {k: base[k] for k in self._restore}
        self._restore.clear()
        if self.lfos:
            beat = self.clock.beat(now)
            out.update({k: lfo.value(base[k], beat) for k, lfo in self.lfos.items()})
        return out

    @property
    def active(self) -> bool:
        """True while an LFO runs (it writes every frame) or a stopped one is still to restore."""
        return bool(self.lfos or self._restore)

    @property
    def pending(self) -> bool:
        return self._held is not None

    def _set_lfos(self, text: str) -> None:
        try:
            lfos = parse_lfos(text)
        except ConfigError as e:  # checked by every writer; kept safe here all the same
            log.warning("%s; keeping the LFOs that run", e)
            return
        self._restore |= set(self.lfos) - set(lfos)
        self.lfos = lfos
