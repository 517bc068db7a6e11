"""OSC dispatch: checks each datagram against dreamcam's address space (see server.py), writes
the values to the parameter store and builds the replies; counts and logs what it rejects.

The address space is the knob table's (`knobs.PARAMS`: one address per knob, checked as the
table says), three queries (/dreamcam/status, /dreamcam/knobs and /dreamcam/presets), the
actions others register (`add_action`: /dreamcam/learn, by the MIDI controller) and the
addresses a controller map binds. MIDI controls reach the same checks through `perform`.

No socket here (as python-osc keeps its dispatcher apart from its servers): `OscServer` in
server.py feeds it what it receives, and tests call `handle_datagram` with bytes directly.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from dreamcam.errors import ConfigError
from dreamcam.control.bindings import Action
from dreamcam.control.clock import BeatClock
from dreamcam.control.osc.compat import Compat
from dreamcam.control.osc.maps import OscMapping, Rejected, check_packet, checked_value, number_arg, osc_value, param_arg
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
    "rate_limited",  # a query over REPLY_RATE per second from one sender: no reply
)
STATUS = OSC_PREFIX + "status"  # no arguments: the reply is STATE with one JSON string of values and stats
STATE = OSC_PREFIX + "state"
KNOBS = OSC_PREFIX + "knobs"  # no arguments: the reply is KNOBS with one JSON string, the knob table
PRESETS = OSC_PREFIX + "presets"  # optional page number: the reply is PRESETS with one JSON string
QUERIES = (STATUS, KNOBS, PRESETS)
LEARN = OSC_PREFIX + "learn"  # a knob name (or "preset NAME", or an address): the next MIDI control moved binds to it
TAP = OSC_PREFIX + "tap"  # no argument, or a number above 0 (a pad's press; 0, its release, is ignored): tap tempo
ACTIONS = (TAP,)
# Replies are what a spoofed sender could aim at someone else (a 24-byte query answered with
# kilobytes), so each is bounded: at most REPLY_MAX_BYTES (well inside one UDP datagram, which
# the OBS script reads with a 64 KiB buffer) and at most REPLY_RATE per second per sender
# address, with bursts of REPLY_BURST. Loopback senders are not limited: nobody elsewhere can
# forge a loopback source address.
REPLY_MAX_BYTES = 32 * 1024
REPLY_RATE = 10.0
REPLY_BURST = 20.0
PRESETS_PAGE = 25  # names per /dreamcam/presets page: 25 of at most 256 characters fit REPLY_MAX_BYTES
TRIM_CHARS = 256  # text values longer than this are cut in a status reply that would not fit
_BAD_KEPT, _BAD_BYTES = 256, 512  # rejected datagrams remembered (a flood repeats itself), their size limit
_MAX_SENDERS = 4096  # rate buckets kept; more (a spoofed flood) starts the table afresh


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
        compat: a `compat.Compat`: another tool's addresses (StreamDiffusionTD, Scope) taken too.
        clock: the beat clock /dreamcam/tap taps (`dreamcam.control.clock.BeatClock`); a
            fixed-tempo one of its own when None.
    """

    def __init__(
        self,
        store: ParamStore,
        *,
        allow: frozenset[str] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        presets: Any = None,
        mapping: OscMapping | None = None,
        compat: Compat | None = None,
        clock: BeatClock | None = None,
    ) -> None:
        self.store = store
        self.clock = clock if clock is not None else BeatClock(store.get("bpm"))
        self.compat = compat
        self._cue = store.get("cue")
        store.subscribe(self._on_cue)  # another writer (a preset with the CLI's --cue, a test) moves the cue too
        self.allow = allow
        self.status = status
        self.presets = presets
        self.mapping = mapping
        if mapping is not None:
            mapping.check_presets(presets.names() if presets is not None else None)
            mapping.check_actions([*addresses(), LEARN])
        self.received = 0  # datagrams
        self.applied = 0  # messages that were accepted
        self.rejected: Counter[str] = Counter({k: 0 for k in REJECT_KINDS})
        self._logged: set[str] = set()
        self._known_bad: dict[bytes, str] = {}  # rejected datagrams -> their reject kind
        self._buckets: dict[str, tuple[float, float]] = {}  # sender address -> (tokens, when)
        self.actions: dict[str, Callable[[list[Any]], None]] = {}
        self._addresses = frozenset()
        self.remap(mapping)

    def remap(self, mapping: OscMapping | None) -> None:
        """Use these bindings from now on (MIDI learn adds to them while running)."""
        self.mapping = mapping
        # the addresses a message may have: dreamcam's, the actions and the mapped ones
        mapped = list(mapping.bindings) if mapping is not None else []
        mapped += list(self.compat.aliases) if self.compat is not None else []
        self._addresses = frozenset(a.encode() for a in [*addresses(), *self.actions, *mapped])

    def replace_map(self, mapping: OscMapping) -> None:
        """Use a map re-read from its file, once its presets and actions check out (ConfigError
        otherwise: the running map stays). Its `lfo = "..."`, when the edit changed it, sets the
        `lfo` knob; one left as it was (a rewrite by learn, an edit elsewhere) leaves the knob
        as OSC, a preset or --lfo last set it."""
        mapping.check_presets(self.presets.names() if self.presets is not None else None)
        mapping.check_actions([*addresses(), LEARN, *self.actions])
        before = getattr(self.mapping, "lfo", None)
        self.remap(mapping)
        lfo = getattr(mapping, "lfo", None)
        if lfo is not None and lfo != before:
            self._flush({"lfo": lfo})

    def add_action(self, address: str, handler: Callable[[list[Any]], None]) -> None:
        """Answer `address` (under /dreamcam/) by calling handler(args) on the serving thread; the
        handler checks the arguments first and raises Rejected (nothing done) when they are wrong."""
        self.actions[address] = handler
        self.remap(self.mapping)

    def perform(self, action: Action, origin: str) -> bool:
        """Apply what a controller message asks (a MIDI control's, translated by its binding),
        through the same checks as an OSC message; False when it is rejected (counted and
        logged as OSC rejections are, `origin` naming the control)."""
        try:
            values = self._action_values(action, origin)
        except Rejected as r:
            self._reject(r.kind, f"{r} (from {origin})")
            return False
        self._flush(dict(values))
        return True

    def _on_cue(self, name: str, value: Any) -> None:
        if name == "cue":
            self._cue = value

    def handle_datagram(self, data: bytes, sender: tuple[str, int]) -> list[bytes]:
        """Validate one datagram and store its values; returns the datagrams to send back.

        The serving thread does the same for each datagram it receives; this entry point needs
        no socket (tests).
        """
        updates: dict[str, Any] = {}
        replies = self._take(data, sender, updates)
        self._flush(updates)
        return replies

    def refused(self, data: bytes, sender: tuple[str, int]) -> bool:
        """Count the datagram; True (and counted as rejected) when its sender or its first bytes
        rule it out, which costs no parsing: a flood of junk is dropped here."""
        self.received += 1
        if self.allow is not None and sender[0] not in self.allow:
            self._reject("not_allowed", f"sender {sender[0]} is not in --osc-allow")
            return True
        if not data.startswith(b"#bundle\0"):
            if not data.startswith(b"/"):
                self._reject("garbage", f"a {len(data)}-byte datagram from {sender[0]} is not OSC")
                return True
            address = data[: data.find(b"\0")]  # a message's address ends at its first null
            if address not in self._addresses:
                self._reject("unknown_address", lambda: f"unknown address {address[:80]!r} from {sender[0]}; "
                             f"known: {', '.join(addresses())}")
                return True
        kind = self._known_bad.get(data)
        if kind is None:
            return False
        self._reject(kind, f"the same datagram as before from {sender[0]}")
        return True

    def count_rejection(self, r: Rejected, origin: str) -> None:
        """Count and log a controller message rejected before it became an action (a MIDI value
        outside its binding's input range), as OSC rejections are."""
        self._reject(r.kind, f"{r} (from {origin})")

    def _take(self, data: bytes, sender: tuple[str, int], updates: dict[str, Any]) -> list[bytes]:
        """Check one datagram and add its values to `updates` (later values win); returns replies.

        A bundle's messages take effect together (OSC 1.0): one message that is rejected drops
        the whole bundle, as a malformed element does.
        """
        return [] if self.refused(data, sender) else self._take_checked(data, sender, updates)

    def _take_checked(self, data: bytes, sender: tuple[str, int], updates: dict[str, Any]) -> list[bytes]:
        """`_take` for a datagram `refused` let through."""
        try:
            check_packet(data)
            messages = [m.message for m in OscPacket(data).messages]
        except Exception as e:  # python-osc raises ParseError, but also struct/index/unicode errors
            self._reject("garbage", f"a {len(data)}-byte datagram from {sender[0]} is not OSC ({e})")
            self._remember_bad(data, "garbage")
            return []
        staged: dict[str, Any] = {}
        queries = []
        for msg in messages:
            try:
                if msg.address in QUERIES:
                    queries.append((msg.address, _query_arg(msg.address, list(msg.params))))
                else:
                    staged.update(self._message_values(msg.address, list(msg.params)))
            except Rejected as r:
                self._cue = self.store.get("cue")  # a cue stepped in a bundle that is dropped did not happen
                rest = f"; the bundle's other {len(messages) - 1} messages are not applied" if len(messages) > 1 else ""
                self._reject(r.kind, f"{r} (from {sender[0]}){rest}")
                self._remember_bad(data, r.kind)
                return []
        updates.update(staged)
        self.applied += len(messages)
        replies = []
        for address, arg in queries:
            if self._over_rate(sender[0]):
                self._reject("rate_limited", f"{sender[0]} asks more than {REPLY_RATE:g} times a second; not answered")
                continue
            self._flush(updates)  # the reply shows every value before it
            replies.append(self._answer(address, arg))
        return replies

    def _remember_bad(self, data: bytes, kind: str) -> None:
        """Remember a rejected datagram, so that a flood repeating it is refused unparsed; not
        an unknown preset (a presets reload may add it) nor a long datagram (memory)."""
        if kind == "unknown_preset" or len(data) > _BAD_BYTES:
            return
        if len(self._known_bad) >= _BAD_KEPT:
            self._known_bad.clear()
        self._known_bad[data] = kind

    def _answer(self, address: str, arg: int | None) -> bytes:
        if address == STATUS:
            return build_message(STATE, self.state_json())
        if address == KNOBS:
            return build_message(KNOBS, knobs_json())
        return build_message(PRESETS, json.dumps(self.presets_page(arg or 0), ensure_ascii=False))

    def _over_rate(self, ip: str) -> bool:
        """Token bucket per sender address; loopback is never limited (see REPLY_RATE)."""
        if ip == "::1" or ip.startswith(("127.", "::ffff:127.")):
            return False
        now = time.monotonic()
        if ip not in self._buckets and len(self._buckets) >= _MAX_SENDERS:
            self._buckets.clear()
        tokens, then = self._buckets.get(ip, (REPLY_BURST, now))
        tokens = min(REPLY_BURST, tokens + (now - then) * REPLY_RATE)
        if tokens < 1.0:
            self._buckets[ip] = (tokens, now)
            return True
        self._buckets[ip] = (tokens - 1.0, now)
        return False

    def _flush(self, updates: dict[str, Any]) -> None:
        if updates:
            try:
                self.store.update(updates)
            except ConfigError as e:  # every value was checked before; this would be a bug
                log.error("OSC update refused by the store: %s", e)
            updates.clear()

    def _message_values(self, address: str, args: list[Any]) -> dict[str, Any]:
        """The store values one message asks for; raises Rejected."""
        if address in self.actions:
            self.actions[address](args)
            return {}
        if address.startswith(OSC_PREFIX):
            name = address[len(OSC_PREFIX) :]
            if name == "preset":
                if len(args) != 1 or not isinstance(args[0], str):
                    raise Rejected("bad_args", f"{address} takes 1 string (a preset name)")
                return self._preset_values(args[0])
            if name == "tap":
                return self._tap(args, address)
            if name == "cue":
                if len(args) != 1 or not isinstance(args[0], str):
                    raise Rejected("bad_args", f"{address} takes 1 string: next, previous or a cue name")
                return self._cue_values(args[0])
            if name not in PARAMS:
                raise Rejected("unknown_address", f"unknown address {address}; known: {', '.join(addresses())}")
            return {name: checked_value(name, param_arg(name, args, address), address)}
        binding = self.mapping.get(address) if self.mapping is not None else None
        if binding is None:
            aliased = self.compat.values(address, args) if self.compat is not None else None
            if aliased is not None:
                return {name: checked_value(name, v, address) for name, v in aliased.items()}
            raise Rejected("unknown_address", f"unknown address {address}")
        action = binding.translate(osc_value(binding, args))
        return {} if action is None else self._action_values(action, address)

    def _action_values(self, action: Action, where: str) -> dict[str, Any]:
        """The store values a translated controller message asks for; raises Rejected."""
        if action.kind == "preset":
            return self._preset_values(action.name)
        if action.kind == "toggle":
            return {action.name: not self.store.get(action.name)}
        if action.kind == "send":
            return self._message_values(action.name, list(action.args))
        return {action.name: checked_value(action.name, action.value, where)}

    def _tap(self, args: list[Any], address: str) -> dict[str, Any]:
        """A tap: from the second on, the tapped tempo goes to the `bpm` knob (the clock has it
        already). Ignored while Ableton Link peers set the tempo."""
        if len(args) > 1 or (args and number_arg(args, address) <= 0):
            if len(args) > 1:
                raise Rejected("bad_args", f"{address} takes no argument, or 1 number (a press above 0)")
            return {}
        bpm = self.clock.tap()
        if bpm is None and self.clock.link is not None and self.clock.link.peers() > 0:
            self._log_once("tap_link", "%s ignored: Ableton Link peers set the tempo", address)
        return {} if bpm is None else {"bpm": checked_value("bpm", bpm, address)}

    def _cue_values(self, how: str) -> dict[str, Any]:
        """The values of the cue `how` names (next, previous or a cue), from the current one."""
        if self.presets is None:
            raise Rejected("unknown_preset", "a cue asked for, but no presets file is loaded (--presets)")
        try:
            name = self.presets.step_cue(self._cue, how)
        except ConfigError as e:
            raise Rejected("unknown_preset", str(e)[:300]) from None
        self._cue = name  # a second "next" in the same burst steps on from this one
        return {**self._preset_values(name), "cue": name}

    def _preset_values(self, name: str) -> dict[str, Any]:
        if self.presets is None:
            raise Rejected(
                "unknown_preset", f"preset {name[:80]!r} asked for, but no presets file is loaded (--presets)"
            )
        if name not in self.presets:
            raise Rejected("unknown_preset", f"no preset named {name[:80]!r}; known: {', '.join(self.presets.names())}")
        return {**self.presets.get(name), "preset": name}

    def _reject(self, kind: str, detail: str | Callable[[], str]) -> None:
        """Count a rejection; log the first of its kind (`detail` may be a callable, so that a
        flood does not pay for text nobody reads)."""
        self.rejected[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            text = detail() if callable(detail) else detail
            log.warning("OSC rejected (%s): %s; further %s rejections are only counted", kind, text, kind)

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
        """The state as JSON of at most REPLY_MAX_BYTES: the preset list is cut first (`presets_total`
        keeps the count, /dreamcam/presets pages the rest), then long text values; a cut is logged."""
        state = self.state()
        names = state["presets"]
        state["presets_total"] = len(names)
        text = _dumps(state)
        if len(text.encode()) <= REPLY_MAX_BYTES:
            return text
        lo, hi = 0, len(names)  # the most names that fit, by bisection
        while lo < hi:
            mid = (lo + hi + 1) // 2
            state["presets"] = names[:mid]
            if len(_dumps(state).encode()) <= REPLY_MAX_BYTES:
                lo = mid
            else:
                hi = mid - 1
        state["presets"] = names[:lo]
        if lo < len(names):
            self._log_once("cut_presets", "the /dreamcam/state reply lists %d of %d presets to fit one datagram; "
                           "/dreamcam/presets PAGE lists them all", lo, len(names))
        text = _dumps(state)
        if len(text.encode()) <= REPLY_MAX_BYTES:
            return text
        trimmed = sorted(k for k, v in state.items() if isinstance(v, str) and len(v) > TRIM_CHARS)
        for k in trimmed:
            state[k] = state[k][:TRIM_CHARS] + "\u2026"
        state["trimmed"] = trimmed
        self._log_once("cut_text", "the /dreamcam/state reply cuts %s to %d characters to fit one datagram",
                       ", ".join(trimmed), TRIM_CHARS)
        return _dumps(state)

    def presets_page(self, page: int) -> dict[str, Any]:
        """One page of preset names (PRESETS_PAGE a page, from 0): the /dreamcam/presets reply."""
        names = self.presets.names() if self.presets is not None else []
        pages = max(1, -(-len(names) // PRESETS_PAGE))
        return {"page": page, "pages": pages, "total": len(names),
                "names": names[page * PRESETS_PAGE : (page + 1) * PRESETS_PAGE]}

    def _log_once(self, key: str, fmt: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(fmt, *args)


def _query_arg(address: str, args: list[Any]) -> int | None:
    """The page number of /dreamcam/presets (optional, a whole number >= 0); other queries take none."""
    if address == PRESETS and len(args) == 1:
        page = args[0]
        if isinstance(page, bool) or not isinstance(page, (int, float)) or page != int(page) or page < 0:
            raise Rejected("bad_args", f"{address} takes an optional page number (0, 1, ...), got {page!r}")
        return int(page)
    if args:
        raise Rejected("bad_args", f"{address} takes {'at most 1 argument' if address == PRESETS else 'no arguments'}, got {len(args)}")
    return None


def _dumps(state: dict[str, Any]) -> str:
    return json.dumps(state, default=_jsonable, ensure_ascii=False)


def addresses() -> list[str]:
    """Every address dreamcam answers: one per knob in the table, then the queries."""
    return [p.osc for p in PARAMS.values()] + list(ACTIONS) + list(QUERIES)


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
