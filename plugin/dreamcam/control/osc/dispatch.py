"""OSC dispatch: checks each datagram against dreamcam's address space (see server.py), writes
the values to the parameter store and builds the replies; counts and logs what it rejects.

The address space is the knob table's (`knobs.PARAMS`: one address per knob, checked as the
table says) plus two queries: /dreamcam/status and /dreamcam/knobs.

No socket here (as python-osc keeps its dispatcher apart from its servers): `OscServer` in
server.py feeds it what it receives, and tests call `handle_datagram` with bytes directly.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from dreamcam.errors import ConfigError
from dreamcam.control.osc.maps import OscMapping, Rejected, check_packet, checked_value, param_arg
from dreamcam.knobs import OSC_PREFIX, PARAMS, ParamStore, describe

log = logging.getLogger(__name__)

REJECT_KINDS = (
    "garbage",  # not an OSC packet
    "unknown_address",
    "bad_args",  # wrong type or number of arguments
    "not_finite",  # NaN or infinity
    "out_of_range",
    "too_long",  # text over the parameter's limit (4,096 characters for prompts)
    "bad_prompt",  # prompt blend syntax that cannot be used (all weights zero, empty part)
    "unknown_preset",
    "not_allowed",  # sender not in the allow list
)
STATUS = OSC_PREFIX + "status"  # no arguments: the reply is STATE with one JSON string of values and stats
STATE = OSC_PREFIX + "state"
KNOBS = OSC_PREFIX + "knobs"  # no arguments: the reply is KNOBS with one JSON string, the knob table


class OscDispatcher:
    """Validates OSC datagrams and stores their values; the base of `OscServer`.

    Args:
        store: the parameter store the engine thread reads between frames.
        allow: sender IP addresses to accept, as `oscmap.parse_allow` gives them; None accepts
            every sender.
        status: callable returning live stats (fps, latency_ms, dropped, ...) for /dreamcam/status.
        presets: a `PresetLibrary` for /dreamcam/preset.
        mapping: an `OscMapping` binding controller addresses to parameters or presets; its
            preset bindings are checked against `presets` here (ConfigError).
    """

    def __init__(
        self,
        store: ParamStore,
        *,
        allow: frozenset[str] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        presets: Any = None,
        mapping: OscMapping | None = None,
    ) -> None:
        self.store = store
        self.allow = allow
        self.status = status
        self.presets = presets
        self.mapping = mapping
        if mapping is not None:
            mapping.check_presets(presets.names() if presets is not None else None)
        self.received = 0  # datagrams
        self.applied = 0  # messages that were accepted
        self.rejected: Counter[str] = Counter({k: 0 for k in REJECT_KINDS})
        self._logged: set[str] = set()

    def handle_datagram(self, data: bytes, sender: tuple[str, int]) -> list[bytes]:
        """Validate one datagram and store its values; returns the datagrams to send back.

        The serving thread does the same for each datagram it receives; this entry point needs
        no socket (tests).
        """
        updates: dict[str, Any] = {}
        replies = self._take(data, sender, updates)
        self._flush(updates)
        return replies

    def _take(self, data: bytes, sender: tuple[str, int], updates: dict[str, Any]) -> list[bytes]:
        """Check one datagram and add its values to `updates` (later values win); returns replies."""
        self.received += 1
        if self.allow is not None and sender[0] not in self.allow:
            self._reject("not_allowed", f"sender {sender[0]} is not in --osc-allow")
            return []
        try:
            check_packet(data)
            messages = [m.message for m in OscPacket(data).messages]
        except Exception as e:  # python-osc raises ParseError, but also struct/index/unicode errors
            self._reject("garbage", f"a {len(data)}-byte datagram from {sender[0]} is not OSC ({e})")
            return []
        replies = []
        for msg in messages:
            try:
                if msg.address in (STATUS, KNOBS):
                    if msg.params:
                        raise Rejected("bad_args", f"{msg.address} takes no arguments, got {len(msg.params)}")
                    if msg.address == STATUS:
                        self._flush(updates)  # the reply shows every message before it
                        replies.append(build_message(STATE, self.state_json()))
                    else:
                        replies.append(build_message(KNOBS, knobs_json()))
                else:
                    updates.update(self._message_values(msg.address, list(msg.params)))
            except Rejected as r:
                self._reject(r.kind, f"{r} (from {sender[0]})")
                continue
            self.applied += 1
        return replies

    def _flush(self, updates: dict[str, Any]) -> None:
        if updates:
            try:
                self.store.update(updates)
            except ConfigError as e:  # every value was checked before; this would be a bug
                log.error("OSC update refused by the store: %s", e)
            updates.clear()

    def _message_values(self, address: str, args: list[Any]) -> dict[str, Any]:
        """The store values one message asks for; raises Rejected."""
        if address.startswith(OSC_PREFIX):
            name = address[len(OSC_PREFIX) :]
            if name == "preset":
                if len(args) != 1 or not isinstance(args[0], str):
                    raise Rejected("bad_args", f"{address} takes 1 string (a preset name)")
                return self._preset_values(args[0])
            if name not in PARAMS:
                raise Rejected("unknown_address", f"unknown address {address}; known: {', '.join(addresses())}")
            return {name: checked_value(name, param_arg(name, args, address), address)}
        binding = self.mapping.get(address) if self.mapping is not None else None
        if binding is None:
            raise Rejected("unknown_address", f"unknown address {address}")
        result = binding.translate(args)
        if result is None:
            return {}
        name, value = result
        return self._preset_values(value) if name == "preset" else {name: checked_value(name, value, address)}

    def _preset_values(self, name: str) -> dict[str, Any]:
        if self.presets is None:
            raise Rejected(
                "unknown_preset", f"preset {name[:80]!r} asked for, but no presets file is loaded (--presets)"
            )
        if name not in self.presets:
            raise Rejected("unknown_preset", f"no preset named {name[:80]!r}; known: {', '.join(self.presets.names())}")
        return {**self.presets.get(name), "preset": name}

    def _reject(self, kind: str, detail: str) -> None:
        self.rejected[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning("OSC rejected (%s): %s; further %s rejections are only counted", kind, detail, kind)

    # ------------------------------------------------------------------ status

    def state(self) -> dict[str, Any]:
        """Parameter values, preset names, live stats and OSC counts: the /dreamcam/state reply."""
        state: dict[str, Any] = self.store.snapshot()
        state["presets"] = self.presets.names() if self.presets is not None else []
        if self.status is not None:
            try:
                state.update(self.status())
            except Exception as e:  # stats are optional; the reply still goes out
                if "status" not in self._logged:
                    self._logged.add("status")
                    log.warning("status callback failed: %r; /dreamcam/state goes out without stats", e)
        state["received"] = self.received
        state["rejected"] = dict(self.rejected)
        state["rejected_total"] = sum(self.rejected.values())
        return state

    def state_json(self) -> str:
        return json.dumps(self.state(), default=_jsonable, ensure_ascii=False)


def addresses() -> list[str]:
    """Every address dreamcam answers: one per knob in the table, then the queries."""
    return [p.osc for p in PARAMS.values()] + [STATUS, KNOBS]


def knobs_json() -> str:
    """The knob table as one JSON string (the /dreamcam/knobs reply, as `dreamcam knobs --json`)."""
    return json.dumps(describe(), ensure_ascii=False)


def build_message(address: str, value: Any) -> bytes:
    """One OSC message datagram: `address` with the single argument `value`."""
    b = OscMessageBuilder(address)
    b.add_arg(value)
    return b.build().dgram


def _jsonable(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else str(v)
