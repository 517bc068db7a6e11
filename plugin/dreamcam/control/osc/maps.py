"""OSC packet and argument checks, and controller mapping files.

A mapping file binds a controller's own addresses (TouchOSC `/1/fader1`, a Max patch, a
TouchDesigner OSC Out CHOP) to dreamcam parameters, so nobody has to re-program a controller:

    # dreamcam OSC mapping (TOML): one [[bind]] per controller address
    [[bind]]
    address = "/1/fader1"
    param = "strength"
    input = [0.0, 1.0]     # what the controller sends (default [0, 1])
    output = [0.2, 0.8]    # what that becomes (default: the parameter's whole range)

    [[bind]]
    address = "/1/rotary1"
    param = "seed"
    output = [0, 1000]     # whole-number parameters are rounded

    [[bind]]
    address = "/1/toggle1"
    param = "bypass"       # on when the value is in the upper half of `input`

    [[bind]]
    address = "/1/push1"
    preset = "watercolor"  # a press (any value above input's minimum, or no argument) applies it

    [[bind]]
    address = "/1/text1"
    param = "prompt"       # text parameters take the controller's string as it is

The input range maps linearly onto the output range; values outside the input range are
rejected, not clamped, like every other out-of-range value. Addresses under `/dreamcam/` are
reserved for dreamcam's own address space and cannot be bound.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamcam.errors import ConfigError
from dreamcam.knobs import OSC_PREFIX, PARAMS, KnobError
from dreamcam.control.lfo import parse_lfos
from dreamcam.control.presets import load_toml
from dreamcam.engine.prompts import parse_prompt

log = logging.getLogger(__name__)


class Rejected(Exception):
    """An OSC message that changes nothing; `kind` is the counter it goes to."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


_FIXED = {ord(c): n for c, n in (("i", 4), ("f", 4), ("r", 4), ("m", 4), ("c", 4), ("h", 8), ("d", 8), ("t", 8))}
_EMPTY = frozenset(b"TFNI")


MAX_BUNDLE_DEPTH = 8  # a bundle inside 7 others is accepted, one inside 8 is not


def check_packet(data: bytes, depth: int = 1) -> None:
    """Raise ValueError unless `data` is an OSC 1.0 message or bundle whose sizes add up exactly.

    python-osc pads short arguments with zeros (a truncated float would read as 0.0) and logs
    unknown type tags on the root logger; this check runs first so neither can happen.
    """
    if len(data) % 4:
        raise ValueError(f"size {len(data)} is not a multiple of 4")
    if data.startswith(b"#bundle\0"):
        if depth > MAX_BUNDLE_DEPTH:
            raise ValueError(f"bundles nested more than {MAX_BUNDLE_DEPTH} deep")
        if len(data) < 16:
            raise ValueError("bundle shorter than its header")
        i = 16
        while i < len(data):
            size = int.from_bytes(data[i : i + 4], "big")
            if size <= 0 or size % 4 or i + 4 + size > len(data):
                raise ValueError(f"bundle element size {size} does not fit the {len(data)}-byte bundle")
            check_packet(data[i + 4 : i + 4 + size], depth + 1)
            i += 4 + size
        return
    if not data.startswith(b"/"):
        raise ValueError("neither a message (starts with /) nor a bundle (#bundle)")
    i = _string_end(data, 0)
    if i == len(data):
        return  # no type tags: a message without arguments
    end = _string_end(data, i)
    tags = data[i:end].rstrip(b"\0")
    if not tags.startswith(b","):
        raise ValueError("type tags must start with ','")
    for t in tags[1:]:
        if t in _FIXED:
            end += _FIXED[t]
        elif t == ord("s"):
            end = _string_end(data, end)
        elif t == ord("b"):
            size = int.from_bytes(data[end : end + 4], "big")
            end += 4 + (size + 3) // 4 * 4
        elif t not in _EMPTY:
            raise ValueError(f"type tag {chr(t)!r} is not accepted")
    if end != len(data):
        raise ValueError(f"arguments take {end} bytes, the message has {len(data)}")


def _string_end(data: bytes, start: int) -> int:
    """Index after the null-terminated, 4-byte padded OSC string at `start`."""
    nul = data.find(b"\0", start)
    if nul < 0:
        raise ValueError("string without its null terminator")
    return (nul // 4 + 1) * 4


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


def param_arg(name: str, args: list[Any], address: str) -> Any:
    """The single argument of a /dreamcam/NAME message: a string for a text knob, else a finite
    number (T/F as 1/0); the knob's own checks follow in `checked_value`. Raises Rejected."""
    if PARAMS[name].kind is str:
        if len(args) != 1 or not isinstance(args[0], str):
            raise Rejected("bad_args", f"{address} takes 1 string")
        return args[0]
    return number_arg(args, address)


# The knob table's rejection kinds, as the OSC counters name them (the others keep their name)
_REJECT_KIND = {"bad_type": "bad_args"}


def checked_value(name: str, value: Any, address: str) -> Any:
    """The value as the knob table validates it (never clamped); raises Rejected with its kind."""
    try:
        value = PARAMS[name].validate(value)
    except KnobError as e:
        raise Rejected(_REJECT_KIND.get(e.kind, e.kind), f"{address}: {e}") from None
    if name == "prompt":
        try:
            parse_prompt(value)
        except ConfigError as e:
            raise Rejected("bad_prompt", f"{address}: {e}") from None
    if name == "lfo":
        try:
            parse_lfos(value)
        except ConfigError as e:
            raise Rejected("bad_args", f"{address}: {e}") from None
    return value


@dataclass(frozen=True)
class Binding:
    """One controller address bound to a parameter (`param`) or to a preset (`preset`)."""

    address: str
    param: str | None = None
    preset: str | None = None
    input: tuple[float, float] = (0.0, 1.0)
    output: tuple[float, float] | None = None

    def translate(self, args: list[Any]) -> tuple[str, Any] | None:
        """(parameter name, value) or ("preset", name) for this message, None to ignore it.

        Raises Rejected for wrong arguments or values outside the input range.
        """
        if self.preset is not None:
            if not args:
                return ("preset", self.preset)
            return ("preset", self.preset) if self._in_range(number_arg(args, self.address)) > self._in_min else None
        p = PARAMS[self.param]
        if p.kind is str:
            if len(args) != 1 or not isinstance(args[0], str):
                raise Rejected("bad_args", f"{self.address} ({self.param}) takes 1 string")
            return (self.param, args[0])
        v = self._in_range(number_arg(args, self.address))
        i0, i1 = self.input
        if p.kind is bool:
            return (self.param, v >= (i0 + i1) / 2 if i1 >= i0 else v <= (i0 + i1) / 2)
        o0, o1 = self.output
        out = o0 + (v - i0) * (o1 - o0) / (i1 - i0)
        return (self.param, round(out) if p.kind is int else float(out))

    def feedback(self, value: Any) -> Any:
        """The value to send back to this address for a parameter value (inverse mapping)."""
        p = PARAMS[self.param]
        if p.kind is str:
            return value
        i0, i1 = self.input
        if p.kind is bool:
            return float(i1 if value else i0)
        o0, o1 = self.output
        return float(i0 + (float(value) - o0) * (i1 - i0) / (o1 - o0)) if o1 != o0 else float(i0)

    @property
    def _in_min(self) -> float:
        return min(self.input)

    def _in_range(self, v: float) -> float:
        lo, hi = min(self.input), max(self.input)
        if not lo <= v <= hi:
            raise Rejected("out_of_range", f"{self.address} takes {_fmt(lo)}..{_fmt(hi)}, got {v!r}")
        return v


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


ALLOW_ANY = "any"  # --osc-allow any: every sender, typed out by the user


def parse_allow(allow: Iterable[str] | None) -> frozenset[str] | None:
    """--osc-allow: IP addresses (a list, or one string split at commas/spaces) -> a set;
    None (not given) or "any" -> None, every sender."""
    if allow is None:
        return None
    if isinstance(allow, str):
        allow = [a for a in allow.replace(",", " ").split() if a]
    if list(allow) == [ALLOW_ANY]:
        return None
    out = set()
    for a in allow:
        try:
            out.add(str(ipaddress.ip_address(a.strip())))
        except ValueError as e:
            raise ConfigError(f"--osc-allow takes IP addresses such as 127.0.0.1,192.168.1.20; got {a!r}") from e
    return frozenset(out)


def parse_feedback(feedback: tuple[str, int] | str | None) -> tuple[str, int] | None:
    """--osc-feedback: "HOST:PORT" or (host, port) -> (host, port); None = no feedback."""
    if feedback is None:
        return None
    given = feedback  # what the user wrote, for the error line
    if isinstance(feedback, str):
        host, _, port = feedback.rpartition(":")
        feedback = (host, int(port) if port.isdigit() else -1)
    host, port = feedback
    if not host or isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"--osc-feedback takes HOST:PORT such as 127.0.0.1:9001, got {given!r}")
    return host, port


class OscMapping:
    """The bindings of one mapping file, by controller address."""

    def __init__(self, bindings: list[Binding], source: str = "<mapping>") -> None:
        self.source = source
        self.bindings: dict[str, Binding] = {}
        for b in bindings:
            if b.address in self.bindings:
                raise ConfigError(f"{source}: address {b.address} is bound twice; keep one [[bind]] per address")
            self.bindings[b.address] = b

    @classmethod
    def load(cls, path: str | os.PathLike) -> OscMapping:
        """Read a mapping file; ConfigError naming the file, the entry and the fix when it is wrong."""
        path = Path(path).expanduser()  # cmd.exe and PowerShell do not expand ~
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = (e.strerror or str(e)) if isinstance(e, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read OSC mapping file {path}: {why}; pass a TOML file to --osc-map") from e
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<mapping>") -> OscMapping:
        data = load_toml(text, source)
        extra = set(data) - {"bind"}
        if extra or not isinstance(data.get("bind", []), list):
            raise ConfigError(f"{source}: expected only [[bind]] entries, got {', '.join(sorted(extra)) or 'bind ='}")
        return cls([_binding(entry, i, source) for i, entry in enumerate(data.get("bind", []), 1)], source)

    def get(self, address: str) -> Binding | None:
        return self.bindings.get(address)

    def check_presets(self, names: list[str] | None) -> None:
        """Preset bindings against the presets there are (None: no --presets file).

        With no presets file a preset binding can never work: ConfigError. A name the file lacks
        is a warning only, as the file reloads live and may gain it.
        """
        for b in self.bindings.values():
            if b.preset is None:
                continue
            if names is None:
                raise ConfigError(
                    f"{self.source}: {b.address} applies preset {b.preset!r}, but no presets file is given; "
                    "add --presets FILE (or drop that [[bind]])"
                )
            if b.preset not in names:
                log.warning("%s: %s applies preset %r, which the presets file does not have (it has: %s); "
                            "presses are rejected until it does", self.source, b.address, b.preset,
                            ", ".join(names) or "none")

    def feedback(self, name: str, value: Any) -> list[tuple[str, Any]]:
        """(controller address, value) pairs that show this parameter value on the controller."""
        return [(b.address, b.feedback(value)) for b in self.bindings.values() if b.param == name]


def _binding(entry: Any, i: int, source: str) -> Binding:
    at = f"{source}: [[bind]] #{i}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{at}: expected a table with address and param (or preset)")
    unknown = set(entry) - {"address", "param", "preset", "input", "output"}
    if unknown:
        raise ConfigError(
            f"{at}: unknown keys {', '.join(sorted(unknown))}; known: address, param, preset, input, output"
        )
    address = entry.get("address")
    if not isinstance(address, str) or not address.startswith("/") or len(address) > 256:
        raise ConfigError(f'{at}: address must be an OSC address such as "/1/fader1", got {address!r}')
    if address.startswith(OSC_PREFIX):
        raise ConfigError(
            f"{at}: {address} is under {OSC_PREFIX}, which dreamcam answers itself; bind another address"
        )
    param, preset = entry.get("param"), entry.get("preset")
    if (param is None) == (preset is None):
        raise ConfigError(f'{at} ({address}): give exactly one of param = "NAME" or preset = "NAME"')
    inp = _pair(entry.get("input", [0.0, 1.0]), f"{at} ({address}) input")
    if inp[0] == inp[1]:
        raise ConfigError(f"{at} ({address}): input range must not be empty, got {list(inp)}")
    if preset is not None:
        if not isinstance(preset, str) or not preset:
            raise ConfigError(f"{at} ({address}): preset must be a preset name, got {preset!r}")
        if "output" in entry:
            raise ConfigError(f"{at} ({address}): a preset binding has no output range")
        return Binding(address, preset=preset, input=inp)
    if param not in PARAMS or param == "preset":
        names = ", ".join(n for n in PARAMS if n != "preset")
        raise ConfigError(
            f'{at} ({address}): unknown param {param!r}; known: {names} (use preset = "NAME" for presets)'
        )
    p = PARAMS[param]
    if p.kind in (str, bool):
        if "output" in entry or (p.kind is str and "input" in entry):
            raise ConfigError(f"{at} ({address}): {param} takes no {'output' if 'output' in entry else 'input'} range")
        return Binding(address, param=param, input=inp)
    out = _pair(entry.get("output", [p.lo, p.hi]), f"{at} ({address}) output")
    for v in out:
        try:
            p.validate(int(v) if p.kind is int and float(v).is_integer() else v)
        except ConfigError as e:
            raise ConfigError(f"{at} ({address}): output {list(out)}: {e}") from None
    return Binding(address, param=param, input=inp, output=out)


def _pair(value: Any, what: str) -> tuple[float, float]:
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )
    if not ok:
        raise ConfigError(f"{what} must be two finite numbers like [0, 1], got {value!r}")
    return float(value[0]), float(value[1])
