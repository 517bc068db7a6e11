"""Waiting for something another thread or process does: poll a condition until it holds."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll(cond: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.005) -> bool:
    """True as soon as `cond()` is true; False once `timeout_s` seconds have passed without."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True


def wait_until(cond: Callable[[], object], *, timeout_s: float = 10.0, what: str = "the condition",
               interval_s: float = 0.02) -> None:
    """Poll `cond()` until true; AssertionError naming `what` after `timeout_s` seconds."""
    if not poll(cond, timeout_s, interval_s):
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
