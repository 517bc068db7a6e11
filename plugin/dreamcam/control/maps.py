"""Controller maps: one TOML file binding OSC addresses and MIDI controls to dreamcam, one
loader and one validator for both (`ControllerMap`). `dreamcam run --map FILE` (`--osc-map` is
the older name) reads it; MIDI learn (`dreamcam.control.midi`) writes to it
(`dreamcam.control.map_file`). The bindings themselves are `dreamcam.control.bindings`.

One `[[bind]]` table per control. The control is an OSC address (`address = "/1/fader1"`) or a
MIDI control: `cc = 7` (a 7-bit control change, 0..127), `cc14 = 7` (a 14-bit pair: the high
half on cc 7, the low half on cc 7 + 32, 0..16383) or `note = 36` (a key or pad), optionally only
on one MIDI channel (`channel = 1`, 1..16; any channel when left out). What it drives is one of:

    param = "strength"                 # a knob (`dreamcam knobs`)
    preset = "watercolor"              # a preset of the --presets file, applied on each press
    action = "/dreamcam/cue"           # any address of dreamcam's own, sent on each press,
    args = ["next"]                    #   with these arguments (default none)

and for knobs with a range:

    input = [0, 127]                   # what the control sends (default: OSC 0..1, cc 0..127, cc14 0..16383)
    output = [0.2, 0.8]                # what that becomes (default: the knob's whole range)
    curve = "exp"                      # linear (default), exp (fine at the low end: x^2), log (x^0.5),
                                       #   or a number g > 0 for x^g

and for on/off knobs (bypass): `mode = "momentary"` (on while the control is in the upper half
of `input`, or a note is held: the default for addresses and CCs) or `mode = "toggle"` (each
press flips it: the default for notes).

A press is a message in the upper half of `input` (a note-on; an OSC message without arguments);
a release (a note-off, a value in the lower half) changes nothing, except for momentary knobs.
Values outside `input` are rejected, never clamped. Addresses under `/dreamcam/` are dreamcam's
own and cannot be bound as controls (they are what `action` sends).

A map may also declare tempo-synced LFOs, at the top before the first `[[bind]]`, in the `lfo`
knob's syntax (`dreamcam.control.lfo`):

    lfo = "strength sine 4 0.1; guidance triangle 8 0.5"

`dreamcam run --map FILE` sets the `lfo` knob to it at start (`--lfo` on the command line wins),
and again when an edit of the file changes it while running.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from dreamcam.control.bindings import (
    CURVES,
    KEYS,
    MAX_ARGS,
    MIDI_KINDS,
    MIDI_MAX,
    MODES,
    Binding,
    MidiControl,
    default_input,
    default_mode,
)
from dreamcam.control.lfo import parse_lfos
from dreamcam.control.presets import load_toml
from dreamcam.errors import ConfigError
from dreamcam.knobs import OSC_PREFIX, PARAMS

log = logging.getLogger(__name__)


class ControllerMap:
    """The bindings of one map file: OSC ones by address, MIDI ones by control; `lfo` the
    file's `lfo = "..."` (None when it has none)."""

    def __init__(self, bindings: list[Binding], source: str = "<map>", lfo: str | None = None) -> None:
        self.source = source
        self.lfo = lfo
        self.osc: dict[str, Binding] = {}
        self.midi: dict[MidiControl, Binding] = {}
        for b in bindings:
            self._check_free(b)
            self.put(b)

    @property
    def bindings(self) -> dict[str, Binding]:
        """The OSC bindings by address (what the OSC server listens for)."""
        return self.osc

    def all(self) -> list[Binding]:
        return [*self.osc.values(), *self.midi.values()]

    @classmethod
    def load(cls, path: str | os.PathLike) -> ControllerMap:
        """Read a map file; ConfigError naming the file, the line and the fix when it is wrong."""
        path = Path(path).expanduser()  # cmd.exe and PowerShell do not expand ~
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = (e.strerror or str(e)) if isinstance(e, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read controller map file {path}: {why}; pass a TOML file to --map") from e
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<map>") -> ControllerMap:
        data = load_toml(text, source)
        extra = set(data) - {"bind", "lfo"}
        if extra or not isinstance(data.get("bind", []), list):
            raise ConfigError(f'{source}: expected only [[bind]] entries and lfo = "...", '
                              f"got {', '.join(sorted(extra)) or 'bind ='}")
        lfo = _lfo(data.get("lfo"), text, source)
        entries = data.get("bind", [])
        lines = bind_lines(text)
        if len(lines) != len(entries):  # written as `bind = [...]`: entries are then named by number
            lines = [None] * len(entries)
        text_lines = text.removeprefix("\ufeff").splitlines()
        ends = [*lines[1:], len(text_lines) + 1] if lines and lines[0] else lines
        bindings = [_binding(entry, _At(source, i, line, text_lines, end))
                    for i, (entry, line, end) in enumerate(zip(entries, lines, ends), 1)]
        m = cls.__new__(cls)
        m.source, m.osc, m.midi, m.lfo = source, {}, {}, lfo
        for b in bindings:
            try:
                m._check_free(b)
            except ConfigError as e:
                raise ConfigError(f"{_where(source, b.line, b.control)}: {e}") from None
            m.put(b)
        return m

    def _check_free(self, b: Binding) -> None:
        """ConfigError when `b`'s control is bound already (or overlaps a 14-bit pair)."""
        if b.address is not None:
            if b.address in self.osc:
                raise ConfigError(f"address {b.address} is bound twice; keep one [[bind]] per control")
            return
        for other in self.midi:
            if _overlap(b.midi, other):
                same = other == b.midi
                raise ConfigError(f"{b.midi} is bound twice; keep one [[bind]] per control" if same else
                                  f"{b.midi} overlaps {other} (a cc14 pair uses cc n and cc n+32); bind one of them")

    def put(self, b: Binding) -> Binding | None:
        """Add `b`, replacing the binding of the same control; returns the one replaced."""
        if b.address is not None:
            old = self.osc.get(b.address)
            self.osc[b.address] = b
            return old
        clash = [other for other in self.midi if _overlap(b.midi, other)]
        old = self.midi[clash[0]] if clash else None
        for other in clash:
            if other != b.midi:
                del self.midi[other]
        self.midi[b.midi] = b  # in the place of the same control, if it was bound
        return old

    def get(self, address: str) -> Binding | None:
        """The binding of an OSC address."""
        return self.osc.get(address)

    def find_midi(self, kind: str, number: int, channel: int) -> Binding | None:
        """The binding of a MIDI control message (channel 1..16): a binding for that channel
        first, then one for any channel."""
        return self.midi.get(MidiControl(kind, number, channel)) or self.midi.get(MidiControl(kind, number))

    def check_presets(self, names: list[str] | None) -> None:
        """Preset bindings against the presets there are (None: no --presets file).

        With no presets file a preset binding can never work: ConfigError. A name the file lacks
        is a warning only, as the file reloads live and may gain it.
        """
        for b in self.all():
            if b.preset is None:
                continue
            if names is None:
                raise ConfigError(
                    f"{_where(self.source, b.line, b.control)}: applies preset {b.preset!r}, but no presets file "
                    "is given; add --presets FILE (or drop that [[bind]])"
                )
            if b.preset not in names:
                log.warning("%s: %s applies preset %r, which the presets file does not have (it has: %s); "
                            "presses are rejected until it does", self.source, b.control, b.preset,
                            ", ".join(names) or "none")

    def check_actions(self, known: list[str]) -> None:
        """ConfigError for an action binding whose address dreamcam does not answer."""
        for b in self.all():
            if b.action is not None and b.action not in known:
                raise ConfigError(f"{_where(self.source, b.line, b.control)}: action {b.action} is not an address "
                                  f"of dreamcam's; known: {', '.join(known)}")

    def feedback(self, name: str, value: Any) -> list[tuple[str, Any]]:
        """(OSC address, value) pairs that show this knob value on OSC controllers."""
        out = []
        for b in self.osc.values():
            if b.param is not None and PARAMS[b.param].kind is str and b.param == name:
                out.append((b.address, value))
                continue
            v = b.feedback(name, value)
            if v is not None:
                out.append((b.address, v))
        return out


def _overlap(a: MidiControl, b: MidiControl) -> bool:
    """True when one MIDI message could drive both controls: the same note, or cc numbers in
    common (a cc14 pair uses cc n and cc n+32), on the same channel or where one listens on any.
    The same control on one channel and on any is allowed: the channel's binding wins."""
    if a.channel != b.channel and None not in (a.channel, b.channel):
        return False
    if a.channel != b.channel and (a.kind, a.number) == (b.kind, b.number):
        return False
    if "note" in (a.kind, b.kind):
        return (a.kind, a.number) == (b.kind, b.number)

    def ccs(c: MidiControl) -> set[int]:
        return {c.number, c.number + 32} if c.kind == "cc14" else {c.number}

    return bool(ccs(a) & ccs(b))


_BIND = re.compile(r"^\s*\[\[\s*bind\s*\]\]")


def bind_lines(text: str) -> list[int]:
    """The line numbers (from 1) of the `[[bind]]` headers of a map file's text."""
    return [i for i, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1) if _BIND.match(line)]


_LFO = re.compile(r"^\s*lfo\s*=")


def _lfo(value: Any, text: str, source: str) -> str | None:
    """The map's `lfo = "..."` checked as the `lfo` knob checks it; ConfigError naming its line."""
    if value is None:
        return None
    line = next((i for i, ln in enumerate(text.removeprefix("\ufeff").splitlines(), 1) if _LFO.match(ln)), None)
    at = _where(source, line)
    if not isinstance(value, str):
        raise ConfigError(f'{at}: lfo must be text like "strength sine 4 0.1", got {value!r}')
    try:
        parse_lfos(value)
    except ConfigError as e:
        raise ConfigError(f"{at}: {e}") from None
    return value


def _where(source: str, line: int | None, control: str | None = None, i: int | None = None) -> str:
    at = f"{source}: line {line}" if line else (f"{source}: [[bind]] #{i}" if i else source)
    return f"{at} ({control})" if control else at


class _At:
    """Where an entry is, for error lines: `f"{at}"` its table's line, `at(key)` the line of one
    of its keys (the table's when not found), each with the control once it is known."""

    def __init__(self, source: str, i: int, line: int | None, lines: list[str], end: int | None) -> None:
        self.source, self.i, self.line, self.lines, self.end = source, i, line, lines, end
        self.control: str | None = None

    def __str__(self) -> str:
        return _where(self.source, self.line, self.control, self.i)

    def __call__(self, key: str) -> str:
        if self.line:
            pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
            for n in range(self.line, min(self.end or len(self.lines), len(self.lines) + 1)):
                if pattern.match(self.lines[n - 1]):
                    return _where(self.source, n, self.control, self.i)
        return str(self)


def _binding(entry: Any, at: _At) -> Binding:
    if not isinstance(entry, dict):
        raise ConfigError(f"{at}: expected a table with a control (address, cc, cc14 or note) and param, preset or action")
    unknown = set(entry) - set(KEYS)
    if unknown:
        raise ConfigError(f"{at(sorted(unknown)[0])}: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(KEYS)}")
    sources = [k for k in ("address", *MIDI_KINDS) if k in entry]
    if len(sources) != 1:
        raise ConfigError(f'{at}: give exactly one control: address = "/1/fader1", cc = 7, cc14 = 7 or note = 36'
                          + (f" (got {', '.join(sources)})" if sources else ""))
    kind = sources[0]
    address = midi = None
    if kind == "address":
        address = entry["address"]
        if not isinstance(address, str) or not address.startswith("/") or len(address) > 256:
            raise ConfigError(f'{at("address")}: address must be an OSC address such as "/1/fader1", got {address!r}')
        if address.startswith(OSC_PREFIX):
            raise ConfigError(f"{at('address')}: {address} is under {OSC_PREFIX}, which dreamcam answers itself; bind another "
                              f'address (to send it from a control, write action = "{address}")')
        if "channel" in entry:
            at.control = address
            raise ConfigError(f"{at('channel')}: channel is for MIDI controls; drop it")
    else:
        top = 31 if kind == "cc14" else 127
        number = entry[kind]
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= top:
            raise ConfigError(f"{at(kind)}: {kind} must be a whole number 0..{top}, got {number!r}"
                              + ("; a cc14 pair is cc n (high half) and cc n+32 (low half)" if kind == "cc14" else ""))
        channel = entry.get("channel")
        if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int) or not 1 <= channel <= 16):
            at.control = f"{kind} {number}"
            raise ConfigError(f"{at('channel')}: channel must be 1..16 (leave it out for any channel), got {channel!r}")
        midi = MidiControl(kind, number, channel)
    b = Binding(address=address, midi=midi, line=at.line)
    at.control = b.control
    return _target(entry, b, at)


def _target(entry: dict, b: Binding, at: _At) -> Binding:
    """`b` with what the entry's param, preset or action asks, checked."""
    targets = [k for k in ("param", "preset", "action") if k in entry]
    if len(targets) != 1:
        raise ConfigError(f'{at}: give exactly one of param = "NAME", preset = "NAME" or action = "/dreamcam/..."')
    what = targets[0]
    value = entry[what]
    if "args" in entry and what != "action":
        raise ConfigError(f"{at('args')}: args go with action = ...; drop them")
    midi_kind = b.midi.kind if b.midi is not None else None
    inp = _pair(entry["input"], f"{at('input')}: input") if "input" in entry else default_input(b)
    if inp[0] == inp[1]:
        raise ConfigError(f"{at('input')}: input range must not be empty, got {list(inp)}")
    if midi_kind is not None and not all(0 <= v <= MIDI_MAX[midi_kind] for v in inp):
        raise ConfigError(f"{at('input')}: input must lie in 0..{MIDI_MAX[midi_kind]}, what {midi_kind} sends; got {list(inp)}")
    b = replace(b, input=inp)
    press_only = "a preset binding" if what == "preset" else "an action binding"
    if what in ("preset", "action"):
        for key in ("output", "curve", "mode"):
            if key in entry:
                raise ConfigError(f"{at(key)}: {press_only} has no {key}; it fires on each press")
        if midi_kind == "cc14":
            raise ConfigError(f"{at}: {press_only} fires on a press: bind it to a cc or a note, not a cc14 pair")
    if what == "preset":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{at('preset')}: preset must be a preset name, got {value!r}")
        return replace(b, preset=value)
    if what == "action":
        if not isinstance(value, str) or not value.startswith(OSC_PREFIX) or len(value) > 256:
            raise ConfigError(f'{at("action")}: action must be an address of dreamcam\'s such as "/dreamcam/cue", got {value!r}')
        args = entry.get("args", [])
        if not isinstance(args, list) or len(args) > MAX_ARGS or not all(_plain_arg(a) for a in args):
            raise ConfigError(f'{at("args")}: args must be a list of up to {MAX_ARGS} strings or numbers, like ["next"]; got {args!r}')
        return replace(b, action=value, args=tuple(args))
    if value not in PARAMS or value == "preset":
        names = ", ".join(n for n in PARAMS if n != "preset")
        raise ConfigError(f'{at("param")}: unknown param {value!r}; known: {names} (use preset = "NAME" for presets)')
    p = PARAMS[value]
    b = replace(b, param=value)
    if p.kind is str:
        if midi_kind is not None:
            raise ConfigError(f"{at('param')}: {value} is text, which a MIDI control cannot send; bind it to an OSC address")
        for key in ("input", "output", "curve", "mode"):
            if key in entry:
                raise ConfigError(f"{at(key)}: {value} takes no {key}")
        return b
    if p.kind is bool:
        for key in ("output", "curve"):
            if key in entry:
                raise ConfigError(f"{at(key)}: {value} is on/off and takes no {key}; mode = \"toggle\" or \"momentary\" sets how")
        if midi_kind == "cc14":
            raise ConfigError(f"{at('param')}: {value} is on/off: bind it to a cc or a note, not a cc14 pair")
        mode = entry.get("mode", default_mode(b))
        if mode not in MODES:
            raise ConfigError(f'{at("mode")}: mode must be "toggle" (each press flips it) or "momentary" (on while held), got {mode!r}')
        return replace(b, mode=mode)
    if "mode" in entry:
        raise ConfigError(f"{at('mode')}: mode is for on/off knobs; {value} takes input, output and curve")
    if midi_kind == "note":
        raise ConfigError(f"{at('param')}: {value} takes a range: bind it to a knob or fader (cc or cc14); a note "
                          "binds presets, on/off knobs (bypass) and actions")
    out = _pair(entry.get("output", [p.lo, p.hi]), f"{at('output')}: output")
    for v in out:
        try:
            p.validate(int(v) if p.kind is int and float(v).is_integer() else v)
        except ConfigError as e:
            raise ConfigError(f"{at('output')}: output {list(out)}: {e}") from None
    return replace(b, output=out, curve=_curve(entry.get("curve", "linear"), at("curve")))


def _curve(value: Any, at: str) -> float:
    if isinstance(value, str) and value in CURVES:
        return CURVES[value]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0.05 <= value <= 20
    if not ok:
        raise ConfigError(f'{at}: curve must be "linear", "exp", "log" or an exponent 0.05..20 (y = x^g), got {value!r}')
    return float(value)


def _plain_arg(a: Any) -> bool:
    if isinstance(a, str):
        return len(a) <= 256
    return isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)


def _pair(value: Any, what: str) -> tuple[float, float]:
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )
    if not ok:
        raise ConfigError(f"{what} must be two finite numbers like [0, 1], got {value!r}")
    return float(value[0]), float(value[1])
