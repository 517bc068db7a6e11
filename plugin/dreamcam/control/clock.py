"""The beat clock: tempo and beat position for quantised changes and tempo-synced LFOs.

One clock, three sources, in this order: an Ableton Link session when dreamcam joined one
(`--link`: the session's tempo and phase, shared with every peer on the network), else the
tempo tapped with `/dreamcam/tap`, else a fixed tempo (the `bpm` knob, 120 by default).

The clock reads a time function (seconds, monotonic; `time.monotonic` by default), so tests
drive it. Link has its own clock; `LinkSession` maps the clock's time onto Link's. Thread-safe:
the OSC thread taps, the engine thread reads.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from dreamcam.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_BPM = 120.0
MIN_BPM, MAX_BPM = 20.0, 999.0
BEATS_PER_BAR = 4  # the Link quantum too: a bar of 4/4
TAP_RESET_S = 2.0  # a tap this long after the last one starts a new count
TAP_KEEP = 8  # the intervals of the last taps averaged
QUANTA = {"off": 0, "beat": 1, "bar": BEATS_PER_BAR}
LINK_PACKAGE = "LinkPython-extern"


class LinkSession:
    """An Ableton Link session through LinkPython-extern (module `link`): tempo, beat and peers.

    `time` is the clock's time function: a time t of it is Link's clock now plus (t - time())."""

    def __init__(self, bpm: float, time_fn: Callable[[], float] = time.monotonic) -> None:
        try:
            import link  # lazy: an optional extra (pip install dreamcam[link]); only --link needs it
        except ImportError as e:
            raise ConfigError(f"--link needs {LINK_PACKAGE}: pip install 'dreamcam[link]' (or pip install {LINK_PACKAGE})") from e
        self._time = time_fn
        self._link = link.Link(float(bpm))
        self._link.enabled = True

    def _micros(self, t: float) -> int:
        return int(self._link.clock().micros() + (t - self._time()) * 1e6)

    def peers(self) -> int:
        return int(self._link.numPeers())

    def tempo(self) -> float:
        return float(self._link.captureSessionState().tempo())

    def beat(self, t: float) -> float:
        return float(self._link.captureSessionState().beatAtTime(self._micros(t), BEATS_PER_BAR))

    def time_of_beat(self, beat: float, t: float) -> float:
        """The clock time of `beat` (`t`: a time near it, for the clock mapping)."""
        us = self._link.captureSessionState().timeAtBeat(beat, BEATS_PER_BAR)
        return t + (us - self._micros(t)) / 1e6

    def set_tempo(self, bpm: float, t: float) -> None:
        state = self._link.captureSessionState()
        state.setTempo(float(bpm), self._micros(t))
        self._link.commitSessionState(state)

    def close(self) -> None:
        self._link.enabled = False


class BeatClock:
    """Tempo and beats: Link when joined (`link`), else tap tempo, else a fixed tempo.

    Args:
        bpm: the fixed tempo until a tap or Link says otherwise.
        time: seconds, monotonic (default `time.monotonic`).
        link: a joined `LinkSession`, or None.
    """

    def __init__(self, bpm: float = DEFAULT_BPM, *, time: Callable[[], float] = time.monotonic,
                 link: LinkSession | None = None) -> None:
        self._time = time
        self._lock = threading.Lock()
        self._bpm = float(bpm)
        self._origin = self._time()  # when beat 0 was
        self._taps: list[float] = []
        self.tapped = False
        self.link = link

    # ------------------------------------------------------------------ reading

    @property
    def source(self) -> str:
        """"link" (joined, with or without peers), "tap" or "fixed"."""
        return "link" if self.link is not None else ("tap" if self.tapped else "fixed")

    def now(self) -> float:
        return self._time()

    def bpm(self) -> float:
        if self.link is not None:
            return self.link.tempo()
        with self._lock:
            return self._bpm

    def beat(self, t: float | None = None) -> float:
        """Beats since the clock's origin at time t (now when None); Link's beat when joined."""
        t = self._time() if t is None else t
        if self.link is not None:
            return self.link.beat(t)
        with self._lock:
            return (t - self._origin) * self._bpm / 60.0

    def next_boundary(self, t: float, quantum: float) -> float:
        """The time of the next multiple of `quantum` beats after t (t itself when it is one)."""
        b = self.beat(t)
        target = math.ceil(b / quantum - 1e-9) * quantum
        if self.link is not None:
            return self.link.time_of_beat(target, t)
        return t + (target - b) * 60.0 / self.bpm()

    def seconds(self, beats: float) -> float:
        return beats * 60.0 / self.bpm()

    # ------------------------------------------------------------------ writing

    def set_bpm(self, bpm: float, t: float | None = None) -> None:
        """A new tempo from time t on, the beat continuing where it is (no jump)."""
        t = self._time() if t is None else t
        if self.link is not None:
            if abs(self.link.tempo() - bpm) > 1e-6:
                self.link.set_tempo(bpm, t)
            return
        with self._lock:
            if bpm == self._bpm:
                return
            beat = (t - self._origin) * self._bpm / 60.0
            self._bpm = float(bpm)
            self._origin = t - beat * 60.0 / self._bpm

    def tap(self, t: float | None = None) -> float | None:
        """A tap at time t: from the second tap on, the tempo of the taps, with the tap on a
        beat; returns it (None for a first tap, or when Link peers set the tempo)."""
        t = self._time() if t is None else t
        if self.link is not None and self.link.peers() > 0:
            return None
        with self._lock:
            if self._taps and t - self._taps[-1] > TAP_RESET_S:
                self._taps.clear()
            self._taps = [*self._taps[-TAP_KEEP:], t]
            if len(self._taps) < 2:
                return None
            gaps = [b - a for a, b in zip(self._taps, self._taps[1:])]
            bpm = round(min(MAX_BPM, max(MIN_BPM, 60.0 * len(gaps) / sum(gaps))), 2)
            self._bpm = bpm
            self._origin = t  # the tap is a downbeat
            self.tapped = True
        if self.link is not None:
            self.link.set_tempo(bpm, t)
        return bpm

    def status(self, t: float | None = None) -> dict[str, Any]:
        """tempo, beat, phase in the bar, source and Link peers: for /dreamcam/status."""
        t = self._time() if t is None else t
        beat = self.beat(t)
        return {
            "tempo": round(self.bpm(), 2),
            "beat": round(beat, 3),
            "bar_phase": round(beat % BEATS_PER_BAR, 3),
            "clock": self.source,
            "link_peers": self.link.peers() if self.link is not None else 0,
        }

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
