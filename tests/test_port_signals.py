"""Portability: Ctrl-Break on Windows stops `dreamcam run` the way Ctrl-C and SIGTERM do.

signal.SIGBREAK exists only on Windows; SIGUSR1 stands in for it here (the handlers are the
real ones, the signal is really delivered to this process).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from dreamcam.cli import signals


class _Runner:
    def __init__(self):
        self.stopped = threading.Event()

    def stop(self):
        self.stopped.set()


@pytest.fixture
def fake_break(monkeypatch):
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    saved = {s: signal.getsignal(s) for s in sigs}
    monkeypatch.setattr(signals, "WINDOWS_BREAK", (signal.SIGUSR1,))
    yield signal.SIGUSR1
    for s, h in saved.items():
        signal.signal(s, h)


def test_ctrl_break_stops_the_live_loop(fake_break):
    runner = _Runner()
    signals.install_signal_handlers(runner)
    os.kill(os.getpid(), fake_break)
    assert runner.stopped.wait(2.0)


def test_ctrl_break_before_the_loop_interrupts_like_ctrl_c(fake_break):
    signals.interrupt_on_sigterm()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), fake_break)
        time.sleep(2.0)  # the handler runs at once; this only bounds the wait if it did not

