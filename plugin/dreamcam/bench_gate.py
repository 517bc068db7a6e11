"""A hand-shake that lets several `dreamcam bench` processes compile side by side but time one at a time.

`tools/gpu_sweep.py` starts many bench rows at once (their torch.compile runs are CPU work that
overlaps well), but a timed stretch must have the GPU and the CPU to itself: the peer's figure is
bound by Python overhead, so a compile on the next core would slow it. With
`--timing-gate PREFIX`, each timed stretch of the bench is bracketed by files:

    PREFIX.ready<N>   written when the bench is ready to time (N counts stretches: 1, 2, ...)
    PREFIX.go<N>      the bench waits for this; the driver writes it once it has paused the others
    PREFIX.done<N>    written when the stretch is over; the driver then resumes the others

Without a prefix `timing()` does nothing, so a bench run alone behaves as before.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from dreamcam.errors import ConfigError


class TimingGate:
    def __init__(self, prefix: str | None, poll_s: float = 0.02) -> None:
        self.prefix = prefix
        self.poll_s = poll_s
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
        while not go.exists():
            time.sleep(self.poll_s)
        self.waited_s += time.perf_counter() - t0
        try:
            yield
        finally:
            self._path("done").write_text(f"{time.time():.6f}\n")
