"""`dreamcam run`'s signal handlers: Ctrl-C, SIGTERM and, on Windows, Ctrl-Break stop it, and its
handlers do not outlive the run when it is called in-process.

signal.SIGBREAK exists only on Windows; SIGUSR1 stands in for it here (the handlers are the
real ones, the signal is really delivered to this process).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from dreamcam.cli import main as cli
from dreamcam.cli import signals

BASE = ["run", "--model", "tiny", "--width", "64", "--height", "64", "--sink", "null", "--frames", "1"]


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


def test_the_signal_handlers_of_a_run_do_not_outlive_it(capsys):
    # cmd_run makes SIGTERM raise KeyboardInterrupt during the load, then SIGINT/SIGTERM stop its
    # runner; in-process (embedded use, these tests) neither may stay installed after main returns,
    # or SIGTERM would raise KeyboardInterrupt anywhere later, and Ctrl-C only "stop" a finished runner
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # fails after the SIGTERM handler is in place: the OSC address is one this machine lacks
    assert cli.main([*BASE, "--source", "testpattern", "--osc-host", "192.0.2.77", "--osc-port", "19390"]) == 2
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert cli.main([*BASE, "--source", "testpattern", "--no-osc"]) == 0  # a whole run: the runner's handlers
    assert {sig: signal.getsignal(sig) for sig in before} == before
    capsys.readouterr()
