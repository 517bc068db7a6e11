"""Glides of the continuous knobs: a jittery fader or a preset's jump reaches the engine as a
straight line over `slew` seconds, not as a step that pops the picture.

Which knobs glide is the knob table's: the floats an engine setter applies (`Apply.FENCE`:
strength, guidance, delta, ...). Seeds, presets, on/off and whole-number knobs and text never
glide; prompts and seeds have their own cross-fade (`transition`). A new target during a glide
starts a new glide from where the value is now, so a fader sending many values a second is
followed smoothly. No torch here: the controller writes what `step` returns.
"""

from __future__ import annotations

from collections.abc import Mapping

from dreamcam.knobs import PARAMS, Apply


def gliding_knobs() -> list[str]:
    """The knobs that glide: floats written by an engine setter, in table order."""
    return [p.name for p in PARAMS.values() if p.kind is float and p.apply is Apply.FENCE]


class _Glide:
    __slots__ = ("start", "target", "t0", "seconds")

    def __init__(self, start: float, target: float, t0: float, seconds: float) -> None:
        self.start, self.target, self.t0, self.seconds = start, target, t0, seconds

    def at(self, now: float) -> float:
        if self.seconds <= 0 or now >= self.t0 + self.seconds:
            return self.target
        w = max(0.0, (now - self.t0) / self.seconds)
        return self.start + (self.target - self.start) * w


class Slew:
    """Linear glides toward each knob's latest target.

    Args:
        values: the values the engine holds now, by knob name.
        seconds: the glide time (the `slew` knob); 0 writes each target at once.
    """

    def __init__(self, values: Mapping[str, float], seconds: float) -> None:
        self.values = {k: float(v) for k, v in values.items()}  # what the engine was last given
        self.seconds = float(seconds)
        self._glides: dict[str, _Glide] = {}

    def retime(self, seconds: float) -> None:
        """A new glide time, for glides started from now on."""
        self.seconds = float(seconds)

    def target(self, name: str, value: float, now: float) -> None:
        """Glide `name` from where it is now to `value`, over the glide time."""
        start = self._glides[name].at(now) if name in self._glides else self.values[name]
        self._glides[name] = _Glide(start, float(value), now, self.seconds)

    def step(self, now: float) -> dict[str, float]:
        """The values to write at `now` for each gliding knob; a glide that arrived ends here."""
        out = {}
        for name, g in list(self._glides.items()):
            out[name] = self.values[name] = g.at(now)
            if out[name] == g.target:
                del self._glides[name]
        return out

    def target_of(self, name: str) -> float:
        """Where `name` is heading (its value when it is not gliding)."""
        g = self._glides.get(name)
        return g.target if g is not None else self.values[name]

    @property
    def active(self) -> bool:
        return bool(self._glides)
