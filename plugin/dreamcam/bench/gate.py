"""A hand-shake that lets several `dreamcam bench` processes compile side by side but time one at a time.

`tools/gpu_sweep.py` starts many bench rows at once (their torch.compile runs are CPU work that
overlaps well), but a timed stretch must have the GPU and the CPU to itself: the peer's figure is
bound by Python overhead, so a compile on the next core would slow it. With
`--timing-gate PREFIX`, each timed stretch of the bench is bracketed by files:

    PREFIX.ready<N>   written when the bench is ready to time (N counts stretches: 1, 2, ...)
    PREFIX.go<N>      the bench waits for this; the driver writes it once it has paused the others
    PREFIX.done<N>    written when the stretch is over; the driver then resumes the others

Without a prefix `timing()` does nothing, so a bench run alone behaves as before. With one but
no driver, the bench says what it waits for and gives up after `max_wait_s` with one line.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from dreamcam.errors import ConfigError

log = logging.getLogger(__name__)
MAX_WAIT_S = 900.0  # longer than any sweep's budget (the device tool allows 600 s a call)


class TimingGate:
    def __init__(self, prefix: str | None, poll_s: float = 0.02, max_wait_s: float = MAX_WAIT_S) -> None:
        self.prefix = prefix
        self.poll_s, self.max_wait_s = poll_s, max_wait_s
        self.count = 0
        self.waited_s = 0.0  # seconds spent waiting for the go (other rows timing)
        if prefix is not None and not Path(prefix).parent.is_dir():
            raise ConfigError(f"--timing-gate {prefix}: folder {Path(prefix).parent} does not exist")

    def _path(self, what: str) -> Path:
        return Path(f"{self.prefix}.{what}{self.count}")

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        if self.prefix is None:
            yield
            return
        self.count += 1
        t0 = time.perf_counter()
        self._path("ready").write_text(f"{time.time():.6f}\n")
        go = self._path("go")
        log.info("timing gate: waiting for %s (tools/gpu_sweep.py writes it)", go)
        while not go.exists():
            if time.perf_counter() - t0 > self.max_wait_s:
                raise ConfigError(f"--timing-gate: no {go.name} after {self.max_wait_s:.0f} s; the flag is for "
                                  "tools/gpu_sweep.py, which writes it: run the bench without --timing-gate")
            time.sleep(self.poll_s)
        self.waited_s += time.perf_counter() - t0
        try:
            yield
        finally:
            self._path("done").write_text(f"{time.time():.6f}\n")
