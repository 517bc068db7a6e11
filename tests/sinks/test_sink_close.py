"""Closing a sink never frees what a running send still uses, and never hangs.

The sinks here are real `Sink` threads; only their device is a stand-in that records when it is
released, so the test sees whether a release ever overlaps a send.
"""

import logging
import threading
import time

import numpy as np

from dreamcam.frames import Frame
from dreamcam.sinks import Sink


class GuardedDevice(Sink):
    """A sink whose device notes a release that comes while a send is running."""

    kind = "guarded"

    def __init__(self, *, depth: int = 1, close_wait_s: float = 0.2) -> None:
        self.depth = depth
        super().__init__(16, 16)
        self.close_wait_s = close_wait_s
        self.sending = threading.Event()  # set while _send runs
        self.released = threading.Event()
        self.released_mid_send = False
        self.released_by = ""
        self.sent: list[int] = []

    def _send(self, frame: Frame) -> None:
        self.sending.set()
        try:
            self.deliver(frame)
            self.sent.append(frame.index)
        finally:
            self.sending.clear()

    def deliver(self, frame: Frame) -> None:
        pass

    def _release(self) -> None:
        self.released_mid_send = self.sending.is_set()
        self.released_by = threading.current_thread().name
        self.released.set()


class BlockingSend(GuardedDevice):
    """A send that blocks until the test lets it go (a stuck driver or network)."""

    kind = "blocking"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.inside = threading.Event()
        self.let_go = threading.Event()

    def deliver(self, frame: Frame) -> None:
        self.inside.set()
        self.let_go.wait(30)


def _frame(i: int = 0) -> Frame:
    return Frame(np.zeros((16, 16, 3), np.uint8), time.perf_counter(), i)


def test_close_returns_while_a_send_blocks_and_the_device_is_released_after_it(caplog):
    sink = BlockingSend(close_wait_s=0.2).start()
    try:
        sink.write(_frame())
        assert sink.inside.wait(5), "the send never started"
        t0 = time.perf_counter()
        with caplog.at_level(logging.WARNING, logger="dreamcam.sinks.base"):
            sink.close()
        took = time.perf_counter() - t0
        assert took < 2.0, f"close took {took:.2f} s with close_wait_s 0.2"
        assert not sink.released.is_set(), "the device was released while a send was still using it"
        assert "blocking sink still busy sending after 0.2 s" in caplog.text
        assert "releases the output when that send returns" in caplog.text
        sink.close()  # idempotent, and again without waiting
    finally:
        sink.let_go.set()
    assert sink.released.wait(5), "the device was never released once the send returned"
    assert not sink.released_mid_send and sink.released_by == "dreamcam-sink-blocking"
    assert sink.sent == [0] and sink.written == 1 and sink.error is None


def test_close_sends_what_is_buffered_then_releases_before_it_returns():
    class Slow(GuardedDevice):
        def deliver(self, frame: Frame) -> None:
            time.sleep(0.01)

    sink = Slow(depth=20, close_wait_s=10.0).start()
    for i in range(20):
        sink.write(_frame(i))
    sink.close()
    assert sink.sent == list(range(20))  # nothing buffered is lost
    assert sink.released.is_set() and not sink.released_mid_send
    assert not any(t.name == "dreamcam-sink-guarded" for t in threading.enumerate())


def test_a_sink_never_started_is_released_by_close():
    sink = GuardedDevice()
    sink.close()
    assert sink.released.is_set() and sink.released_by == threading.current_thread().name


def test_a_failing_release_is_reported_in_error_not_raised():
    class FailsToFinish(GuardedDevice):
        def _release(self) -> None:
            super()._release()
            raise OSError("no space left on device")

    sink = FailsToFinish().start()
    sink.write(_frame())
    sink.close()
    assert isinstance(sink.error, OSError) and sink.sent == [0]
