"""What the `dreamcam` command writes to the terminal (stderr) while it runs: one-line
messages, the live status line and a seconds counter for slow starts. The CLI owns printing;
library modules log instead."""

from __future__ import annotations

import contextlib
import sys
import threading
import time

from dreamcam.runtime.flicker import flicker_text

STATUS_LOG_EVERY_S = 10.0  # without a terminal (a service, a log file): one status line this often


def status_printer(beat=None):
    """On a terminal, one live line rewritten in place; elsewhere a plain line every 10 s.
    `beat` (a callable returning the beat clock's status) adds tempo and beat while Link or tap
    tempo drive the clock."""
    tty = sys.stderr.isatty()
    last = [0.0]

    def show(st: dict) -> None:
        now = time.monotonic()
        if not tty and now - last[0] < STATUS_LOG_EVERY_S:
            return
        last[0] = now
        line = (
            f"{st['fps']:6.1f} fps | engine {st['engine_ms']:6.1f} ms | latency {st['latency_ms']:6.1f} ms "
            f"| in {st['input_fps']:5.1f} fps | dropped {st['dropped']} | {flicker_text(st.get('flicker'), st.get('flicker_rel'))}"
            f"{' | BYPASS' if st['bypass'] else ''}{' | NO SIGNAL (reconnecting)' if st['signal_lost'] else ''}"
        )
        line += beat_text(beat() if beat is not None else {})
        sys.stderr.write(f"\r{line}   " if tty else f"dreamcam: {line}\n")
        sys.stderr.flush()

    return show


def beat_text(b: dict) -> str:
    """" | 124.0 bpm link (1 peer) beat 3.2" while Link or tap tempo drive the beat clock; else ""."""
    if b.get("clock") not in ("link", "tap"):
        return ""
    peers = f" ({b['link_peers']} peer{'s' if b['link_peers'] != 1 else ''})" if b["clock"] == "link" else ""
    return f" | {b['tempo']:.1f} bpm {b['clock']}{peers} beat {b['bar_phase'] + 1:.1f}"


def say(msg: str) -> None:
    print(f"dreamcam: {msg}", file=sys.stderr, flush=True)


def say_live(msg: str) -> None:
    """`say` while the live status line runs: on a terminal, below that line, not over it."""
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    say(msg)


@contextlib.contextmanager
def elapsed(msg: str):
    """Say `msg ...`; on a terminal, count the seconds on that line until the block ends."""
    if not sys.stderr.isatty():
        say(f"{msg} ...")
        yield
        return
    t0, stop = time.perf_counter(), threading.Event()

    def tick() -> None:
        while not stop.wait(1.0):
            sys.stderr.write(f"\rdreamcam: {msg} ... {time.perf_counter() - t0:.0f} s")
            sys.stderr.flush()

    sys.stderr.write(f"dreamcam: {msg} ...")
    sys.stderr.flush()
    ticker = threading.Thread(target=tick, name="dreamcam-elapsed", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
        sys.stderr.write("\n")
        sys.stderr.flush()
