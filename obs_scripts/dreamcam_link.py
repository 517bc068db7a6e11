"""dreamcam's live parameters as the OBS script sends them, and the UDP link that sends them.

The parameters, their types, defaults, ranges and labels are dreamcam's knob table, read from
dreamcam_knobs.json next to this file (OBS's Python cannot import dreamcam; the file is written
by `dreamcam knobs --json > dreamcam_knobs.json` and a test keeps it in sync with the table).
Once a dreamcam answers, the link asks it for its own table (/dreamcam/knobs) and uses that, so
a script beside an older file still sends what the running dreamcam accepts.

Plain Python (standard library, python-osc when importable), no OBS API: tests use it
directly. `DreamcamLink` sends only values that changed, polls `/dreamcam/status` and turns
the `/dreamcam/state` reply into a status line and a preset list. When it first hears from a
dreamcam, and again when that dreamcam was restarted (a new `instance` in its state), it sends
every value it was given that the dreamcam does not have yet: dreamcam and OBS agree whichever
started first. It never blocks: the socket is non-blocking, DNS look-ups run on a short-lived
thread and nothing sleeps; nothing is logged from that thread (OBS would not know the script).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import socket
import threading
import time
from collections import namedtuple

import dreamcam_osc as osc

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000  # dreamcam's default --osc-port
POLL_MS = 500  # status poll period, milliseconds
NO_ANSWER_S = 2.0  # seconds without a /dreamcam/state reply before "no answer"
RESOLVE_RETRY_S = 3.0  # seconds between look-ups of a host name that did not resolve
PAGES_RETRY_S = 1.5  # seconds before pages of the preset list that did not come are asked for again
PAGES_REFRESH_S = 12.0  # seconds a paged preset list is kept before it is read again (the file may change)
OSC_PREFIX = "/dreamcam/"
KNOBS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dreamcam_knobs.json")

# kind: "text", "float", "int" or "bool"; lo/hi: the accepted range (None for text and bool)
# choices: the only values a text knob takes (shown as a list in OBS), or None
Param = namedtuple("Param", "name kind default lo hi label step max_len choices", defaults=(None,))
_KINDS = {"str": "text", "float": "float", "int": "int", "bool": "bool"}
_OSC_TAG = {"text": "s", "float": "f", "int": "i", "bool": "i"}


def params_from_knobs(knobs) -> tuple:
    """The script's parameters from dreamcam's knob table as data (a list of objects, as
    `dreamcam knobs --json` prints it). "preset" comes first, so that values sent with a
    preset win over the preset's own."""
    if not isinstance(knobs, list):
        raise ValueError(f"the knob table must be a JSON list of objects, got {type(knobs).__name__}")
    params = []
    for k in knobs:
        try:
            params.append(Param(k["name"], _KINDS[k["type"]], k["default"], k["min"], k["max"], k["label"],
                                k["step"], k["max_len"], k.get("choices")))
        except (KeyError, TypeError) as e:
            raise ValueError(f"knob table entry {k!r} is not what dreamcam knobs --json writes ({e!r}); "
                             "write the file anew with it") from e
    return tuple(sorted(params, key=lambda p: p.name != "preset"))


def read_knobs(path: str = KNOBS_FILE) -> tuple:
    """`params_from_knobs` of the JSON file at `path`; ValueError saying how to fix it."""
    try:
        with open(path, encoding="utf-8") as f:
            knobs = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read dreamcam's knob table {path}: {e}; keep dreamcam_knobs.json next to "
                         f"dreamcam_link.py, or write it with: dreamcam knobs --json > {path}") from e
    return params_from_knobs(knobs)


PARAMS = read_knobs()
PARAM_BY_NAME = {p.name: p for p in PARAMS}

_logger = logging.getLogger("dreamcam_obs")


def coerce(name: str, value, by_name=None):
    """`value` as parameter `name` is sent, or ValueError saying expected vs actual.

    Out-of-range values are rejected, not clamped, as dreamcam itself does. `by_name`: the
    parameters by name (default: those of dreamcam_knobs.json).
    """
    by_name = PARAM_BY_NAME if by_name is None else by_name
    p = by_name.get(name)
    if p is None:
        raise ValueError(f"unknown parameter {name!r}; known: {', '.join(by_name)}")
    if p.kind == "text":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {type(value).__name__}")
        if len(value) > p.max_len:
            raise ValueError(f"{name} is {len(value)} characters; dreamcam accepts at most {p.max_len}")
        return value
    if p.kind == "bool":
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise ValueError(f"{name} must be true/false or 0/1, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if p.kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if (p.lo is not None and value < p.lo) or (p.hi is not None and value > p.hi):
        raise ValueError(f"{name} must be between {p.lo} and {p.hi}, got {value!r}")
    return value


def encode_param(name: str, value, by_name=None) -> bytes:
    """The OSC datagram that sets parameter `name` (value already coerced)."""
    kind = (PARAM_BY_NAME if by_name is None else by_name)[name].kind
    if kind == "bool":
        value = int(value)
    return osc.encode_message(OSC_PREFIX + name, [value], _OSC_TAG[kind])


def next_preset(presets, current: str, step: int):
    """The preset `step` places after `current` in `presets`, wrapping; None when empty.

    From an unknown or empty `current`, +1 gives the first preset and -1 the last.
    """
    presets = list(presets)
    if not presets:
        return None
    if current in presets:
        return presets[(presets.index(current) + step) % len(presets)]
    return presets[0] if step > 0 else presets[-1]


def parse_state(args) -> dict:
    """The dict in a /dreamcam/state reply (one JSON object string), or ValueError.

    Fields are read defensively, as other dreamcam versions may shape them otherwise: "presets"
    keeps only its names (text), and is [] when it is not a list."""
    if len(args) != 1 or not isinstance(args[0], str):
        raise ValueError(f"/dreamcam/state must carry one JSON string, got {args!r}")
    state = json.loads(args[0])
    if not isinstance(state, dict):
        raise ValueError(f"/dreamcam/state JSON must be an object, got {type(state).__name__}")
    presets = state.get("presets", [])
    state["presets"] = [n for n in presets if isinstance(n, str)] if isinstance(presets, list) else []
    return state


def status_line(state, host: str, port: int) -> str:
    """'connected: 24.8 fps, 41 ms' for a state dict, 'loading model ...' while dreamcam loads
    it (its state says {"loading": true}), or the no-answer line for None."""
    if state is None:
        return f"no answer from dreamcam at {host}:{port}"
    if state.get("loading") is True:
        return f"loading model (dreamcam at {host}:{port})"

    def num(key, fmt):
        value = state.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return format(value, fmt) if ok else "?"

    line = f"connected: {num('fps', '.1f')} fps, {num('latency_ms', '.0f')} ms"
    midi = state.get("midi")
    if isinstance(midi, dict) and isinstance(midi.get("learn"), str):
        line += f"; MIDI learn {midi['learn'][:80]}: move a control"
    return line


def learnable(params) -> list:
    """The knobs a MIDI control can be learned for: those with a range, and the on/off ones."""
    return [p.name for p in params if p.kind in ("float", "int", "bool")]


def same_value(p: Param, a, b) -> bool:
    """Whether dreamcam's value `a` is the value `b` sent for `p` (floats go as OSC float32)."""
    if p.kind == "float" and isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    return type(a) is type(b) and a == b


def _numeric_address(host: str, port: int):
    """(family, sockaddr) when `host` needs no DNS look-up, else None."""
    if host == "localhost":
        host = "127.0.0.1"
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family, ((host, port) if family == socket.AF_INET else (host, port, 0, 0))
    return None


class DreamcamLink:
    """Sends parameter changes and status polls to one dreamcam over UDP; never blocks.

    `update()` sends only values that differ from what was last sent to this target;
    `poll()` (call every POLL_MS) reads replies, re-sends anything unsent and asks for status.
    Only values given to `update()` (or set by the hotkey actions) are ever sent: a knob never
    set here keeps the value dreamcam has (a `dreamcam run --bypass` stays in bypass).
    Thread-safe: OBS calls it from the UI, graphics and hotkey threads. `log(level, msg)` is
    called from those threads only, never from the look-up thread.
    """

    def __init__(self, host=DEFAULT_HOST, port=DEFAULT_PORT, *, no_answer_s=NO_ANSWER_S,
                 clock=time.monotonic, log=None):
        self._lock = threading.RLock()
        self._clock = clock
        self._log = log or (lambda level, msg: _logger.log(level, msg))
        self._no_answer_s = no_answer_s
        self._logged = set()
        self._sock = None
        self._addr = None
        self._closed = False
        self._generation = 0
        self.host, self.port = None, None
        self._desired = {}  # the values set here: sent to every dreamcam that lacks them
        self._sent = {}  # what this dreamcam has: sent from here, or read from its state
        self._given = {}  # the values update() was last given, so that only changes count
        self._refused = {}  # values the table refused, checked again against dreamcam's own table
        self.state, self.presets, self.current_preset = None, [], ""
        self._pages, self._pages_count, self._pages_total, self._pages_asked = {}, 1, 0, None
        self._seen = {}
        self.params, self._by_name, self._knobs_asked = PARAMS, PARAM_BY_NAME, False
        self._last_reply = self._first_poll = None
        self._instance = None  # the `instance` of dreamcam's state: a new one is a restarted dreamcam
        self._resolving, self._resolve_error, self._resolve_failed_at = False, None, None
        self.set_target(host, port)

    # -- target -----------------------------------------------------------------------
    def set_target(self, host: str, port: int) -> None:
        """Point at dreamcam's OSC server; everything is re-sent to a new target."""
        if not isinstance(host, str) or not host.strip():
            raise ValueError(f"OSC host must be an address or name like 127.0.0.1, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"OSC port must be 1..65535 (dreamcam --osc-port), got {port!r}")
        host = host.strip()
        with self._lock:
            if (host, port) == (self.host, self.port):
                return
            self._close_socket()
            self.host, self.port = host, port
            self._generation += 1
            self._sent.clear()
            self.state, self._seen = None, {}
            # a new target may be another dreamcam: the file's table until it gives its own
            self.params, self._by_name, self._knobs_asked = PARAMS, PARAM_BY_NAME, False
            self._last_reply = self._first_poll = self._instance = None
            self._resolve_error = self._resolve_failed_at = None
            self._addr = _numeric_address(host, port)
            if self._addr is None:
                self._start_resolve()

    def _start_resolve(self):
        self._resolving = True
        threading.Thread(target=self._resolve, args=(self.host, self.port, self._generation),
                         name="dreamcam-obs-resolve", daemon=True).start()

    def _resolve(self, host, port, generation):
        # DNS can take seconds: done off OBS's threads, result dropped if the target moved on.
        # The outcome is only recorded: poll() (on OBS's thread) logs it and the status shows it.
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            addr, error = (family, sockaddr), None
        except OSError as e:
            addr, error = None, f"cannot resolve dreamcam host {host!r}: {e}; check the OSC host"
        with self._lock:
            if generation != self._generation or self._closed:
                return
            self._resolving = False
            self._addr, self._resolve_error = addr, error
            self._resolve_failed_at = self._clock() if error else None

    def _socket(self):
        if self._sock is None and self._addr is not None and not self._closed:
            sock = socket.socket(self._addr[0], socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sock = sock
        return self._sock

    def _close_socket(self):
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    # -- sending ----------------------------------------------------------------------
    def _send(self, data: bytes) -> bool:
        sock = self._socket()
        if sock is None:
            return False
        try:
            sock.sendto(data, self._addr[1])
            return True
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            self._log_once(logging.WARNING, f"cannot send to dreamcam at {self.host}:{self.port}: {e}")
            return False

    def update(self, values) -> list:
        """Take new values (name -> value; unknown names ignored, bad values logged and
        skipped) and send those that changed. Returns the names sent.

        A value equal to the one the previous call gave for that name is not taken again:
        it did not change here, and dreamcam may have a newer one from another controller."""
        with self._lock:
            changed = {}
            for name, value in values.items():
                if name not in self._given or self._given[name] != value:
                    self._given[name] = changed[name] = value
            self._take(changed)
            return self.flush()

    def forget(self, names) -> None:
        """No longer send these knobs (their values were reset here): dreamcam keeps its own."""
        with self._lock:
            for name in names:
                self._desired.pop(name, None)
                self._given.pop(name, None)
                self._refused.pop(name, None)

    def _take(self, values):
        for name, value in values.items():
            if name not in self._by_name:
                self._refused[name] = value  # perhaps a knob of dreamcam's own table, once it answers
                continue
            try:
                self._desired[name] = coerce(name, value, self._by_name)
                self._refused.pop(name, None)
            except ValueError as e:
                self._refused[name] = value
                self._log_once(logging.WARNING, f"not sent: {e}")

    def flush(self) -> list:
        """Send every wanted value that this target has not yet received; names sent."""
        sent = []
        with self._lock:
            for p in self.params:
                if p.name not in self._desired:
                    continue
                value = self._desired[p.name]
                if p.name in self._sent and same_value(p, self._sent[p.name], value):
                    continue
                if p.name == "preset" and value == "":
                    self._sent["preset"] = value  # "no preset chosen" is nothing to send
                    continue
                if self._send(encode_param(p.name, value, self._by_name)):
                    self._sent[p.name] = value
                    sent.append(p.name)
                    if p.name == "preset":
                        self.current_preset = value
        return sent

    def _force(self, name, value) -> bool:
        with self._lock:
            self._desired[name] = value
            ok = self._send(encode_param(name, value, self._by_name))
            if ok:
                self._sent[name] = value
            return ok

    def select_preset(self, name: str) -> bool:
        """Apply preset `name` now, even when it was the last one sent from here."""
        with self._lock:
            self.current_preset = coerce("preset", name, self._by_name)
            return self._force("preset", self.current_preset)

    def step_preset(self, step: int):
        """Select the preset `step` places from the current one; its name, or None."""
        with self._lock:
            name = next_preset(self.presets, self.current_preset, step)
            if name is not None:
                self.select_preset(name)
            return name

    def step_cue(self, how: str) -> bool:
        """Send /dreamcam/cue with "next" or "previous": dreamcam keeps the cue list and the
        current cue (its status shows it). True when it was sent."""
        with self._lock:
            return self._send(osc.encode_message(OSC_PREFIX + "cue", [how], "s"))

    @property
    def bypass(self) -> bool:
        """dreamcam's bypass as last known here (sent or read from its state)."""
        with self._lock:
            return bool(self._sent.get("bypass", self._desired.get("bypass", False)))

    def toggle_bypass(self) -> bool:
        """Flip bypass and send it; returns the new value."""
        with self._lock:
            value = not self.bypass
            self._force("bypass", value)
            return value

    def learn(self, target: str) -> bool:
        """Ask dreamcam (started with --midi) to learn: the next control moved on its MIDI
        device drives `target`, a knob name ('preset NAME' and 'off' work too). True when sent."""
        return self._send(osc.encode_message(OSC_PREFIX + "learn", [target], "s"))

    # -- status -----------------------------------------------------------------------
    def poll(self) -> str:
        """Read replies, send what is unsent, ask for status; returns the status line."""
        with self._lock:
            now = self._clock()
            if self._resolve_error is not None:
                self._log_once(logging.WARNING, self._resolve_error)
                if not self._resolving and now - self._resolve_failed_at >= RESOLVE_RETRY_S:
                    self._start_resolve()  # the name may resolve later (network up, DNS fixed)
            self._read_replies(now)
            self.flush()
            if self._send(osc.encode_message(OSC_PREFIX + "status")) and self._first_poll is None:
                self._first_poll = now
            return self.status(now)

    def status(self, now=None) -> str:
        with self._lock:
            now = self._clock() if now is None else now
            if self._last_reply is not None and now - self._last_reply <= self._no_answer_s:
                return status_line(self.state, self.host, self.port)
            if self._addr is None:
                return self._resolve_error or f"looking up dreamcam host {self.host}"
            if self._last_reply is None and (self._first_poll is None or now - self._first_poll <= self._no_answer_s):
                return f"waiting for dreamcam at {self.host}:{self.port}"
            return status_line(None, self.host, self.port)

    @property
    def connected(self) -> bool:
        return self.status().startswith("connected")

    def _read_replies(self, now):
        sock = self._socket()
        while sock is not None:
            try:
                data, _ = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionResetError:
                continue  # Windows reports an earlier datagram's ICMP "port unreachable" here
            except OSError as e:
                if e.errno == errno.EINVAL:  # Winsock's WSAEINVAL: nothing sent yet, so unbound: no replies
                    return
                self._log_once(logging.WARNING, f"cannot read from dreamcam: {e}")
                return
            try:
                messages = osc.decode_packet(data)
                for address, args in messages:
                    if address == OSC_PREFIX + "state":
                        self._take_state(parse_state(args), now)
                    elif address == OSC_PREFIX + "knobs":
                        self._take_knobs(args)
                    elif address == OSC_PREFIX + "presets":
                        self._take_presets_page(args)
            except ValueError as e:
                self._log_once(logging.WARNING, f"ignored a bad reply from dreamcam: {e}")

    def _take_state(self, state, now):
        instance = state.get("instance")
        if self._last_reply is None:
            fresh = True  # the first answer from this target
        elif instance is not None or self._instance is not None:
            fresh = instance != self._instance  # dreamcam was restarted
        else:  # a dreamcam that names no instance: after a silence it may be a new one
            fresh = now - self._last_reply > self._no_answer_s
        self.state, self._last_reply, self._instance = state, now, instance
        if not self._knobs_asked:  # dreamcam is there: ask once for its own knob table
            self._knobs_asked = self._send(osc.encode_message(OSC_PREFIX + "knobs"))
        self.presets = self._all_presets(state, now)
        if fresh:
            self._sync(state)
            return
        # Adopt a preset or bypass that changed on dreamcam's side (another controller);
        # a reply still carrying the old value must not undo what was just sent from here.
        for key in ("preset", "bypass"):
            if key in state and state[key] != self._seen.get(key, object()):
                self._seen[key] = state[key]
                if key == "preset" and isinstance(state[key], str):
                    self.current_preset = state[key]
                elif key == "bypass" and state[key] in (0, 1):
                    self._sent["bypass"] = bool(state[key])
                    if "bypass" in self._desired:  # set here before: the newer value is the one to keep
                        self._desired["bypass"] = self._sent["bypass"]

    def _sync(self, state):
        """A dreamcam heard from for the first time: what it has is what its state says; send it
        every value set here that differs (all of them after a preset, which sets many)."""
        self._sent = {p.name: state[p.name] for p in self.params if p.name in state}
        preset = self._desired.get("preset", "")
        if preset and state.get("preset") != preset:
            self._sent = {}
        self._seen = {key: state[key] for key in ("preset", "bypass") if key in state}
        if isinstance(state.get("preset"), str):
            self.current_preset = state["preset"]
        sent = self.flush()
        if sent:
            self._log(logging.INFO, f"sent dreamcam at {self.host}:{self.port} the values set here: {', '.join(sent)}")

    def _all_presets(self, state, now):
        """Every preset name. A long list does not fit the state reply: dreamcam then sends the
        first names and `presets_total`, and the rest is asked for a page at a time
        (/dreamcam/presets PAGE), again every PAGES_REFRESH_S in case the presets file changed."""
        names, total = state["presets"], state.get("presets_total")
        if not isinstance(total, int) or isinstance(total, bool) or total <= len(names):
            self._pages, self._pages_total = {}, 0
            return names
        if total != self._pages_total or (self._pages_asked is not None and now - self._pages_asked > PAGES_REFRESH_S):
            self._pages, self._pages_count, self._pages_total, self._pages_asked = {}, 1, total, None
        have = self._paged_names()
        if len(have) >= total and have[: len(names)] == names:
            return have[:total]
        if self._pages_asked is None or now - self._pages_asked >= PAGES_RETRY_S:
            self._pages_asked = now
            for page in range(self._pages_count):
                if page not in self._pages:
                    self._send(osc.encode_message(OSC_PREFIX + "presets", [page], "i"))
        return names if len(have) <= len(names) else have

    def _paged_names(self):
        return [n for page in sorted(self._pages) for n in self._pages[page]]

    def _take_presets_page(self, args):
        """One /dreamcam/presets reply (a JSON string: page, pages, total, names)."""
        if len(args) != 1 or not isinstance(args[0], str):
            raise ValueError(f"/dreamcam/presets must carry one JSON string, got {args!r}")
        reply = json.loads(args[0])
        page, pages, names = reply.get("page"), reply.get("pages"), reply.get("names")
        if not (isinstance(page, int) and isinstance(pages, int) and 0 <= page < pages <= 10_000
                and isinstance(names, list)):
            raise ValueError(f"/dreamcam/presets reply is not a page of names: {args[0][:200]!r}")
        first = self._pages_count == 1 and not self._pages
        self._pages[page] = [n for n in names if isinstance(n, str)]
        self._pages_count = pages
        if first and pages > 1:  # now the number of pages is known: ask for the others at once
            for other in range(1, pages):
                self._send(osc.encode_message(OSC_PREFIX + "presets", [other], "i"))
        have = self._paged_names()
        if len(self._pages) == pages and len(have) > len(self.presets):
            self.presets = have

    def _take_knobs(self, args):
        """Use the knob table of a /dreamcam/knobs reply (one JSON string) from now on."""
        if len(args) != 1 or not isinstance(args[0], str):
            raise ValueError(f"/dreamcam/knobs must carry one JSON string, got {args!r}")
        params = params_from_knobs(json.loads(args[0]))
        if params != self.params:
            self._log_once(logging.INFO, f"dreamcam at {self.host}:{self.port} has another knob table than "
                                         f"dreamcam_knobs.json beside the script; using dreamcam's (refresh the "
                                         f"file with: dreamcam knobs --json > dreamcam_knobs.json)")
        self.params, self._by_name = params, {p.name: p for p in params}
        self._take(dict(self._refused))  # what the file's table refused may be accepted now

    def _log_once(self, level, msg):
        if msg not in self._logged:
            self._logged.add(msg)
            self._log(level, msg)

    # -- lifetime ---------------------------------------------------------------------
    def close(self) -> None:
        """Close the socket; later calls send nothing. Safe to call twice."""
        with self._lock:
            self._generation += 1
            self._closed = True
            self._close_socket()
            self._addr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
