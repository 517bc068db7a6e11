"""What a controller map holds: controls (an OSC address or a MIDI control) bound to a knob, a
preset or an action, and how a value a control sends becomes an action (`Binding.translate`) and
a knob's value the value shown back on the control (`Binding.feedback`). The file format, its
loader and validator are `dreamcam.control.maps`; writing a binding into a file is
`dreamcam.control.map_file`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from dreamcam.knobs import PARAMS

MIDI_KINDS = ("cc", "cc14", "note")
MIDI_MAX = {"cc": 127, "cc14": 16383, "note": 127}  # the value range a MIDI control sends, from 0
CURVES = {"linear": 1.0, "exp": 2.0, "log": 0.5}  # name -> the exponent g of y = x^g
MODES = ("momentary", "toggle")
KEYS = ("address", *MIDI_KINDS, "channel", "param", "preset", "action", "args", "input", "output", "curve", "mode")
MAX_ARGS = 8


class Rejected(Exception):
    """A controller message that changes nothing; `kind` is the counter it goes to."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def number_arg(args: list[Any], address: str) -> float | int:
    """The single numeric argument (OSC i, h, f, d; T/F count as 1/0) of a message, finite."""
    if len(args) != 1:
        raise Rejected("bad_args", f"{address} takes 1 number, got {len(args)} arguments")
    v = args[0]
    if isinstance(v, bool):
        return int(v)
    if not isinstance(v, (int, float)):
        raise Rejected("bad_args", f"{address} takes a number, got {type(v).__name__}")
    if isinstance(v, float) and not math.isfinite(v):
        raise Rejected("not_finite", f"{address} got {v!r}; values must be finite")
    return v


@dataclass(frozen=True)
class MidiControl:
    """A MIDI control: kind cc | cc14 | note, its number (cc14: the high half's cc, 0..31) and
    channel (1..16, None: any)."""

    kind: str
    number: int
    channel: int | None = None

    def __str__(self) -> str:
        on = f" on channel {self.channel}" if self.channel is not None else ""
        return f"{self.kind} {self.number}{on}"

    def any_channel(self) -> MidiControl:
        return replace(self, channel=None)


@dataclass(frozen=True)
class Action:
    """What one controller message asks for.

    kind: "set" (`name` = value), "toggle" (flip the on/off knob `name`), "preset" (apply preset
    `name`) or "send" (the dreamcam address `name` with `args`).
    """

    kind: str
    name: str
    value: Any = None
    args: tuple = ()


@dataclass(frozen=True)
class Binding:
    """One control bound to a knob (`param`), a preset or an action address; `address` (OSC)
    or `midi` names the control."""

    address: str | None = None
    midi: MidiControl | None = None
    param: str | None = None
    preset: str | None = None
    action: str | None = None
    args: tuple = ()
    input: tuple[float, float] = (0.0, 1.0)
    output: tuple[float, float] | None = None
    curve: float = 1.0
    mode: str = "momentary"
    line: int | None = field(default=None, compare=False)  # where the file has it, for messages

    @property
    def control(self) -> str:
        """The control as a person names it: /1/fader1, cc 7 on channel 1."""
        return self.address if self.address is not None else str(self.midi)

    def translate(self, value: float | str | None) -> Action | None:
        """The action for a value the control sent (None: a press without a value, an OSC
        message without arguments; text for a text knob); None when it changes nothing.
        Raises Rejected for a value outside `input`."""
        if self.param is not None and PARAMS[self.param].kind is str:
            if not isinstance(value, str):
                raise Rejected("bad_args", f"{self.control} ({self.param}) takes 1 string")
            return Action("set", self.param, value)
        i0, i1 = self.input
        if value is not None:
            lo, hi = min(i0, i1), max(i0, i1)
            if not lo <= value <= hi:
                raise Rejected("out_of_range", f"{self.control} takes {_fmt(lo)}..{_fmt(hi)}, got {value!r}")
        pressed = value is None or (value >= (i0 + i1) / 2 if i1 >= i0 else value <= (i0 + i1) / 2)
        if self.preset is not None:
            return Action("preset", self.preset) if pressed else None
        if self.action is not None:
            return Action("send", self.action, args=self.args) if pressed else None
        p = PARAMS[self.param]
        if p.kind is bool:
            if self.mode == "toggle":
                return Action("toggle", self.param) if pressed else None
            return Action("set", self.param, pressed)
        if value is None:
            raise Rejected("bad_args", f"{self.control} ({self.param}) takes a value")
        x = (value - i0) / (i1 - i0)
        o0, o1 = self.output
        out = o0 + (x**self.curve) * (o1 - o0)
        return Action("set", self.param, round(out) if p.kind is int else float(out))

    def feedback(self, name: str, value: Any) -> float | None:
        """The value to send to this control when knob `name` became `value` (the inverse of
        `translate`), in `input` units; None when this binding does not show that knob."""
        i0, i1 = self.input
        if self.preset is not None:
            return float(i1 if value == self.preset else i0) if name == "preset" else None
        if self.param != name:
            return None
        p = PARAMS[name]
        if p.kind is bool:
            return float(i1 if value else i0)
        o0, o1 = self.output
        if o1 == o0:
            return float(i0)
        x = min(1.0, max(0.0, (float(value) - o0) / (o1 - o0)))
        return float(i0 + x ** (1.0 / self.curve) * (i1 - i0))



def default_input(b: Binding) -> tuple[float, float]:
    return (0.0, 1.0) if b.midi is None else (0.0, float(MIDI_MAX[b.midi.kind]))


def default_mode(b: Binding) -> str:
    return "toggle" if b.midi is not None and b.midi.kind == "note" else "momentary"


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)
