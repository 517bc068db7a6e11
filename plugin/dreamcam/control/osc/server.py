"""OSC server: validates messages, writes the parameter store, answers queries. Nothing else.

Address space (default 127.0.0.1:9000): one address per knob of the knob table
(`dreamcam.knobs.PARAMS`; `dreamcam knobs` lists each with its address, type and range; the
one of `preset` takes a preset's name and applies its values), plus three queries:

    /dreamcam/status             no arguments: the sender gets /dreamcam/state s (JSON of every
                                 knob's value, the preset names that fit, presets_total and live stats)
    /dreamcam/knobs              no arguments: the sender gets /dreamcam/knobs s (JSON: the table)
    /dreamcam/presets [page]     the sender gets /dreamcam/presets s (JSON: page, pages, total, names)

and the action /dreamcam/tap (tap tempo). With `compat`, another tool's addresses as well
(compat.py: StreamDiffusionTD's /prompt, ..., Scope's /scope/prompt, ...).

Replies are bounded (dispatch.REPLY_MAX_BYTES, REPLY_RATE per sender address) and a listen
address other than loopback needs `allow` (addresses, or "any"): otherwise a forged sender
could aim replies at someone else.

Ints are accepted where floats are expected, a whole-valued float where an int is, and 0/1 or
T/F for on/off knobs. Bundles are applied as one store update as soon as they arrive (time tags
are not waited for), all of their messages or, when one is invalid, none. A message that is malformed, unknown, of the wrong type or argument count,
not finite, out of range (rejected, never clamped), too long, names an unknown preset or comes
from a sender outside `allow` changes nothing: it is counted under its kind
(`dispatch.REJECT_KINDS`), the first of each kind is logged, and the server keeps serving. No
message reads or writes a file, loads a model or runs code: values only go to the store.

The checks and the store writes are `OscDispatcher`'s (dispatch.py, no socket); this module
owns the socket, the serving thread and the feedback thread.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from dreamcam.errors import ConfigError
from dreamcam.control.clock import BeatClock
from dreamcam.control.coalesce import Latest
from dreamcam.control.osc.compat import REPORT_INTERVAL_S, Compat
from dreamcam.control.osc.dispatch import OscDispatcher, build_message
from dreamcam.control.osc.maps import ALLOW_ANY, OscMapping, parse_allow, parse_feedback
from dreamcam.knobs import PARAMS, ParamStore

log = logging.getLogger(__name__)

DEFAULT_PORT = 9000
# A 10,000-message burst on loopback waits in the kernel while the server catches up. Measured
# on Linux: a 28-byte OSC message takes 832 bytes of receive buffer, so 10,000 take 8.3 MB;
# with 8 MiB (as getsockopt reports it) and the server reading meanwhile none were lost, with
# 2 MiB about half. Linux caps SO_RCVBUF at net.core.rmem_max (and reports twice what it
# grants) unless SO_RCVBUFFORCE is permitted (root / CAP_NET_ADMIN).
RCVBUF_BYTES = 16 * 1024 * 1024
RCVBUF_ENOUGH = 8 * 1024 * 1024
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
FEEDBACK_INTERVAL_S = 0.02  # feedback to controllers is coalesced to at most 50 sends per second
_POLL_S = 0.2  # how often the serving threads check for close() and presets changes
# A burst is handled in slices of OSC work, each followed by a rest 9 times as long: the
# engine thread needs the GIL for every torch call, and a busy OSC thread would otherwise hold
# it for the whole burst. Measured on an H200 machine (tiny engine, 512x512, fp16), frame p50
# during 10,000-message bursts: 108 ms with no rest, 16-20 ms with rest 4, 13.3 ms with rest 9
# against 12.3 ms without OSC. The server then takes about 1.7 s per 10,000 messages.
_SLICE_S = 0.0005
_REST = 9.0
# Junk (refused on its first bytes or as a datagram rejected before, unparsed; or rejected
# after parsing) is drained in slices of up to _JUNK_SLICE_S with
# a rest as long: a flood of it is then read at about half the speed of a bare recv loop, so a
# valid message behind 20,000 junk datagrams still lands within 100 ms (docs/control.md).
_JUNK_SLICE_S = 0.005
_JUNK_REST = 1.0

class OscServer(OscDispatcher):
    """A UDP OSC server thread writing to a `ParamStore` (the checks are `OscDispatcher`'s).

    Args:
        store: the parameter store the engine thread reads between frames.
        host: interface to listen on; anything but loopback is logged as a warning.
        port: UDP port (default 9000; 0 picks a free one, see `port` after `start`).
        allow: sender IP addresses to accept, or "any"; None accepts every sender on loopback,
            and on any other address start() refuses it (ConfigError): say who may steer.
        status: callable returning live stats (fps, latency_ms, dropped, ...) for /dreamcam/status.
        presets: a `PresetLibrary` for /dreamcam/preset (reloaded when its file changes).
        feedback: (host, port) to push every changed value to, so controllers stay in sync.
        mapping: an `OscMapping` binding controller addresses to parameters or presets.
        compat: a `compat.Compat`: another tool's addresses taken too; where that tool's server
            reports (StreamDiffusionTD: /stream-info/fps, ...), the same reports go once a second
            to `feedback`, or to the tool's own report port (127.0.0.1:8248) without it.
        clock: the beat clock that /dreamcam/tap taps.
    """

    def __init__(
        self,
        store: ParamStore,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        allow: Iterable[str] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        presets: Any = None,
        feedback: tuple[str, int] | None = None,
        mapping: OscMapping | None = None,
        compat: Compat | None = None,
        clock: BeatClock | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"--osc-port must be a whole number in 0..65535, got {port!r}")
        allow_set = parse_allow(allow)
        self.allow_any = allow is not None and allow_set is None  # "any", typed out
        self.feedback = parse_feedback(feedback)
        super().__init__(store, allow=allow_set, status=status, presets=presets, mapping=mapping, compat=compat,
                         clock=clock)
        self.report_to = (self.feedback or compat.report_to) if compat is not None and compat.reports else None
        self.host = host
        self.port = port
        self.rcvbuf = 0  # effective receive buffer in bytes, after start()
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._fb = Latest()  # knob -> its newest value, for the feedback thread
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> OscServer:
        """Bind the socket and start serving (and pushing feedback); returns self."""
        if self._sock is not None:
            return self
        if self._closed:
            raise RuntimeError("this OscServer was closed; make a new one")
        family, addr, loopback = listen_address(self.host, self.port)
        if not loopback and self.allow is None and self.allow_any:
            log.warning(
                "OSC listens on %s:%d, reachable from other machines: anyone there can change prompt "
                "and settings; use --osc-allow to limit senders",
                addr[0],
                self.port,
            )
        elif not loopback and self.allow is not None:
            log.warning("OSC listens on %s:%d, reachable from other machines; only %s may steer",
                        addr[0], self.port, ", ".join(sorted(self.allow)))
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.rcvbuf = _grow_rcvbuf(sock, RCVBUF_BYTES)
            sock.bind(addr)
        except OSError as e:
            sock.close()
            fix = ("is another dreamcam running? choose another --osc-port" if e.errno != errno.EADDRNOTAVAIL else
                   "this machine has no such address: use --osc-host 127.0.0.1, 0.0.0.0 (all) or one of its own addresses")
            raise ConfigError(f"cannot listen for OSC on {addr[0]}:{self.port}: {e.strerror or e}; {fix}") from e
        if not loopback and self.allow is None and not self.allow_any:
            # checked after bind, so that an address this machine lacks is said first
            sock.close()
            raise ConfigError(
                f"refusing OSC on {addr[0]}, reachable from other machines, without --osc-allow: name the senders "
                f"(--osc-allow 192.168.1.20,192.168.1.21) or type --osc-allow {ALLOW_ANY} to let anyone steer"
            )
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._threads.append(threading.Thread(target=self._serve, name="dreamcam-osc", daemon=True))
        if self.presets is not None:  # its own thread: reading a large file must not hold up OSC
            self._threads.append(threading.Thread(target=self._reload_presets, name="dreamcam-osc-presets", daemon=True))
        if self.feedback is not None:
            self.store.subscribe(self._on_change)
            self._fb.put_all(self.store.snapshot())
            self._threads.append(
                threading.Thread(target=self._push_feedback, name="dreamcam-osc-feedback", daemon=True)
            )
        if self.report_to is not None:
            self._threads.append(threading.Thread(target=self._push_reports, name="dreamcam-osc-reports", daemon=True))
        for t in self._threads:
            t.start()
        log.info("OSC listening on %s:%d (receive buffer %d bytes)", addr[0], self.port, self.rcvbuf)
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def close(self) -> None:
        """Stop the threads and close the socket; safe to call more than once."""
        self._closed = True
        self._stop.set()
        self._fb.wake()
        for t in self._threads:
            t.join(timeout=2.0)
        self._threads.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> OscServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ network

    def _serve(self) -> None:
        sock = self._sock
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if sel.select(_POLL_S):
                    work, junk = self._drain(sock)
                    if work or junk:  # a burst is waiting: leave the interpreter (the GIL) to the engine thread
                        time.sleep(work * _REST + junk * _JUNK_REST)

    def _reload_presets(self) -> None:
        while not self._stop.wait(_POLL_S):
            try:
                self.presets.maybe_reload()
            except Exception:  # a bug must not end reloading silently; it is logged with its trace
                log.exception("presets reload failed")

    def _drain(self, sock: socket.socket) -> tuple[float, float]:
        """Handle what the socket holds, in one store update, until it is empty or a slice is
        used up; returns the seconds spent on OSC work and on junk when the slice ended first
        (more may be waiting), else (0, 0)."""
        updates: dict[str, Any] = {}
        work = junk = 0.0
        recv, clock = sock.recvfrom, time.perf_counter
        t = clock()
        while work < _SLICE_S and junk < _JUNK_SLICE_S:
            try:
                data, sender = recv(65535)
            except BlockingIOError:
                work = junk = 0.0
                break
            except OSError as e:  # Windows reports an earlier reply's ICMP "port unreachable" here
                log.debug("OSC receive error: %s", e)
                continue
            if self.refused(data, sender):
                now = clock()
                junk += now - t
                t = now
                continue
            applied = self.applied
            try:
                for reply in self._take_checked(data, sender, updates):
                    self._send(reply, sender)
            except Exception:  # a bug must not stop the server; it is logged with its trace
                log.exception("OSC message from %s failed", sender[0])
            now = clock()
            if self.applied != applied:
                work += now - t
            else:  # rejected after parsing: rested as junk, or a flood of it would queue valid control
                junk += now - t
            t = now
        self._flush(updates)
        return work, junk

    def _send(self, dgram: bytes, to: tuple[str, int]) -> None:
        try:
            self._sock.sendto(dgram, to)
        except (OSError, AttributeError) as e:
            log.debug("OSC send to %s failed: %s", to, e)

    # ------------------------------------------------------------------ feedback

    def _on_change(self, name: str, value: Any) -> None:
        if self._closed:
            return
        self._fb.put(name, value)

    def _push_feedback(self) -> None:
        self._fb.drain(self._stop, FEEDBACK_INTERVAL_S, self._send_feedback)

    def _send_feedback(self, name: str, value: Any) -> None:
        for address, v in self._feedback_messages(name, value):
            self._send(build_message(address, v), self.feedback)

    def _push_reports(self) -> None:
        """The compat tool's status reports (StreamDiffusionTD: /server_active, /stream-info/fps,
        ...), made from the /dreamcam/state values, every REPORT_INTERVAL_S."""
        while not self._stop.is_set():
            try:
                for address, value in self.compat.report(self.state()):
                    self._send(build_message(address, value), self.report_to)
            except Exception:  # a bug must not end the reports silently
                log.exception("OSC reports to %s failed", self.report_to)
            self._stop.wait(REPORT_INTERVAL_S)

    def _feedback_messages(self, name: str, value: Any) -> list[tuple[str, Any]]:
        out = [(PARAMS[name].osc, int(value) if isinstance(value, bool) else value)]
        if self.mapping is not None:
            out += self.mapping.feedback(name, value)
        return out


def listen_address(host: str, port: int) -> tuple[int, tuple, bool]:
    """(socket family, bind address, is loopback) for --osc-host; ConfigError when unknown.

    "localhost" is 127.0.0.1, where the OBS script sends it: Windows and macOS resolve it to ::1
    first, and a server on ::1 alone hears no IPv4 sender (most OSC apps)."""
    try:
        info = socket.getaddrinfo("127.0.0.1" if host.lower() == "localhost" else host, port, type=socket.SOCK_DGRAM)[0]
    except socket.gaierror as e:
        raise ConfigError(f"--osc-host {host!r} is not a known address ({e}); the default is 127.0.0.1") from e
    return info[0], info[4], ipaddress.ip_address(info[4][0]).is_loopback


def _grow_rcvbuf(sock: socket.socket, want: int) -> int:
    """Ask for a `want`-byte receive buffer, halving where refused; returns what the kernel granted."""
    try:  # Linux with CAP_NET_ADMIN may pass net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, want)
    except (OSError, TypeError):
        size = want
        while size >= 1 << 18:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)  # Linux caps, macOS refuses
                break
            except OSError:
                size //= 2
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < RCVBUF_ENOUGH:
        log.warning(
            "OSC receive buffer is %d bytes, below the %d that hold a 10,000-message burst: a burst may "
            "lose messages; %s",
            got,
            RCVBUF_ENOUGH,
            _rcvbuf_fix(),
        )
    return got


def _rcvbuf_fix() -> str:
    """How to let the kernel grant RCVBUF_BYTES on this OS."""
    if sys.platform == "darwin":
        # macOS caps every socket buffer at kern.ipc.maxsockbuf (8 MiB by default) including its
        # bookkeeping, so a 16 MiB SO_RCVBUF needs about 19 MB there: 32 MiB leaves room
        return f"on macOS raise the cap with: sudo sysctl -w kern.ipc.maxsockbuf={2 * RCVBUF_BYTES}"
    return f"on Linux raise the cap with: sudo sysctl -w net.core.rmem_max={RCVBUF_BYTES}"
