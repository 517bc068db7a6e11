"""How `dreamcam run` answers Ctrl-C, SIGTERM and Ctrl-Break: before the live loop they interrupt
(the outputs opened so far close), during it they stop the loop, which closes everything in order."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

# Ctrl-Break in a Windows console: unhandled, it ends the process at once (a recording is left
# without its index); Python lets a handler take it (signal docs: SIGBREAK, Windows only)
WINDOWS_BREAK = (signal.SIGBREAK,) if hasattr(signal, "SIGBREAK") else ()


def stop_signals() -> tuple[int, ...]:
    """Ctrl-C, SIGTERM and, on Windows, Ctrl-Break."""
    return (signal.SIGINT, signal.SIGTERM, *WINDOWS_BREAK)


def set_handlers(handlers: dict) -> None:
    """signal.signal for each (signal, handler); a no-op off the main thread (embedded use)."""
    for sig, handler in handlers.items():
        with contextlib.suppress(ValueError):
            signal.signal(sig, handler)


def interrupt_on_sigterm() -> None:
    """Until the live loop runs, SIGTERM interrupts like Ctrl-C (KeyboardInterrupt): the outputs
    opened so far are closed and a recording is finished, not left without its index."""

    def handler(signum, _frame):
        raise KeyboardInterrupt

    set_handlers(dict.fromkeys((signal.SIGTERM, *WINDOWS_BREAK), handler))


def install_signal_handlers(runner: Any) -> None:
    """Ctrl-C, SIGTERM and Ctrl-Break stop the live loop (`runner.stop()`)."""

    def handler(signum, _frame):
        runner.stop()

    set_handlers(dict.fromkeys(stop_signals(), handler))
