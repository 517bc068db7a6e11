"""OSC packet and argument checks, and what the OSC server takes from controller maps.

Controller maps (one `[[bind]]` per control, OSC addresses and MIDI controls in one file) are
`dreamcam.control.maps`; `OscMapping` is its `ControllerMap` under the name the OSC server has
always used, and `osc_value` turns an OSC message's arguments into the value a binding takes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from dreamcam.control.bindings import Binding, Rejected, number_arg
from dreamcam.control.maps import ControllerMap
from dreamcam.control.lfo import parse_lfos
from dreamcam.engine.prompts import parse_prompt
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS, KnobError

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


OscMapping = ControllerMap  # the name the OSC server and its callers know


def osc_value(binding: Binding, args: list[Any]) -> float | str | None:
    """The value an OSC message gives a binding: its string for a text knob, else its one
    number (None when it has no arguments: a press). Raises Rejected."""
    if binding.param is not None and PARAMS[binding.param].kind is str:
        if len(args) != 1 or not isinstance(args[0], str):
            raise Rejected("bad_args", f"{binding.address} ({binding.param}) takes 1 string")
        return args[0]
    return number_arg(args, binding.address) if args else None
