"""Tempo-synced LFOs: a continuous knob breathing with the music.

The `lfo` knob holds the running LFOs as text, one per knob, separated by `;`:

    strength sine 4 0.1; guidance triangle 2 0.5

each `KNOB SHAPE BEATS DEPTH`: the knob (one that glides: strength, guidance, delta, ...), the
shape (sine, triangle, saw or random: a new random level each cycle), the cycle length in beats
of the beat clock, and the depth: the knob swings up to DEPTH either side of its own value (the
value a fader, a preset or OSC set), kept inside the knob's range. "" stops them all. A preset
holds it like any other knob (`lfo = "strength sine 4 0.1"`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from dreamcam.control.slew import gliding_knobs
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS

SHAPES = ("sine", "triangle", "saw", "random")
MAX_BEATS = 256.0
EXAMPLE = "strength sine 4 0.1; guidance triangle 2 0.5"


@dataclass(frozen=True)
class Lfo:
    knob: str
    shape: str
    beats: float
    depth: float

    def wave(self, beat: float) -> float:
        """-1..1 at `beat` (cycle starts on multiples of `beats`)."""
        cycles = beat / self.beats
        p = cycles % 1.0
        if self.shape == "sine":
            return math.sin(2 * math.pi * p)
        if self.shape == "triangle":
            return 4.0 * p if p < 0.25 else (2.0 - 4.0 * p if p < 0.75 else 4.0 * p - 4.0)
        if self.shape == "saw":
            return 2.0 * p - 1.0
        return random.Random(f"{self.knob}:{math.floor(cycles)}").uniform(-1.0, 1.0)  # random: one level a cycle

    def value(self, base: float, beat: float) -> float:
        """The knob's value: `base` swung by the wave, inside the knob's range."""
        p = PARAMS[self.knob]
        v = base + self.depth * self.wave(beat)
        return min(p.hi, max(p.lo, v)) if p.lo is not None else v


def parse_lfos(text: str) -> dict[str, Lfo]:
    """The LFOs of an `lfo` value, by knob; ConfigError saying what is wrong and how to write it."""
    out: dict[str, Lfo] = {}
    for part in text.split(";"):
        words = part.split()
        if not words:
            continue
        if len(words) != 4:
            raise ConfigError(f"lfo {part.strip()!r}: write KNOB SHAPE BEATS DEPTH, e.g. {EXAMPLE!r}")
        knob, shape, beats, depth = words
        if knob not in gliding_knobs():
            raise ConfigError(f"lfo {part.strip()!r}: {knob!r} cannot follow an LFO; these can: {', '.join(gliding_knobs())}")
        if shape not in SHAPES:
            raise ConfigError(f"lfo {part.strip()!r}: shape must be one of {', '.join(SHAPES)}, got {shape!r}")
        try:
            b, d = float(beats), float(depth)
        except ValueError:
            raise ConfigError(f"lfo {part.strip()!r}: BEATS and DEPTH are numbers, e.g. {EXAMPLE!r}") from None
        if not (math.isfinite(b) and 0 < b <= MAX_BEATS):
            raise ConfigError(f"lfo {part.strip()!r}: BEATS must be above 0 and at most {MAX_BEATS:g}, got {beats}")
        if not (math.isfinite(d) and d >= 0):
            raise ConfigError(f"lfo {part.strip()!r}: DEPTH must be a number >= 0, got {depth}")
        if knob in out:
            raise ConfigError(f"lfo: {knob} has two LFOs; keep one")
        out[knob] = Lfo(knob, shape, b, d)
    return out
