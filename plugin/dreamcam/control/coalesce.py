"""Newest-value-wins mailboxes for feedback to controllers (OSC, MIDI).

A knob can change hundreds of times a second (an LFO, a fader sweep, an OSC flood); a
controller needs only its newest value. Writers `put` from any thread; one sender thread
`drain`s the mailbox in batches, at most one batch per interval, so a flood costs one send
per knob per interval and never blocks the writer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any


class Latest:
    """The newest value of each key since the last batch, and a wake-up for its sender."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._wake = threading.Event()

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._pending[key] = value
        self._wake.set()

    def put_all(self, values: Mapping[str, Any]) -> None:
        with self._lock:
            self._pending.update(values)
        self._wake.set()

    def wake(self) -> None:
        """Wake the sender without a value (to let it see that it must stop)."""
        self._wake.set()

    def drain(self, stop: threading.Event, interval_s: float, send: Callable[[str, Any], None]) -> None:
        """Until `stop` is set: wait for values, hand each key's newest to `send` (in the order
        the keys first came), then rest `interval_s`. Runs on the sender's thread."""
        while not stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if stop.is_set():
                break
            with self._lock:
                batch, self._pending = self._pending, {}
            for key, value in batch.items():
                send(key, value)
            stop.wait(interval_s)
