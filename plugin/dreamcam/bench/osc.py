"""OSC speed: update-to-store latency on loopback, frame timing under a message burst, and how
fast a flood of junk is drained (a valid message sent right after it: when it lands).

`bench_osc()` is what `dreamcam bench --osc` reports. The burst comes from a separate process
(like a real controller), so the GIL it uses is not the engine's.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import torch

from dreamcam.control.controller import Controller
from dreamcam.control.osc.dispatch import build_message
from dreamcam.control.osc.server import OscServer
from dreamcam.engine.stream import StreamEngine
from dreamcam.knobs import ParamStore
from dreamcam.models.pipelines import tiny_pipeline

_SENDER = r"""
import socket, sys
from pythonosc.osc_message_builder import OscMessageBuilder
host, port, n, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
msgs = []
for i in range(n):
    b = OscMessageBuilder("/dreamcam/strength")
    b.add_arg((i % 1000) / 1000.0 if i < n - 1 else last)
    msgs.append(b.build().dgram)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sys.stdout.write("ready\n"); sys.stdout.flush()
for line in sys.stdin:  # one burst per "go" line
    for m in msgs:
        s.sendto(m, (host, port))
"""


class BurstSender:
    """A child process that sends `n` strength updates as fast as it can, the last one `last`,
    at each `go()`. The messages are built beforehand, so a burst is only `sendto` calls."""

    def __init__(self, port: int, n: int = 10_000, *, last: float = 0.875, host: str = "127.0.0.1") -> None:
        self.n, self.last = n, last
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SENDER, host, str(port), str(n), repr(last)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("the OSC burst sender did not start (is python-osc installed?)")

    def go(self) -> None:
        self._proc.stdin.write("go\n")
        self._proc.stdin.flush()

    def close(self) -> None:
        """End the child (after the bursts already asked for); safe to call more than once."""
        if self._proc.stdin.closed:
            return
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()

    def __enter__(self) -> BurstSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


def osc_latency(samples: int = 1000, *, host: str = "127.0.0.1") -> dict[str, Any]:
    """Milliseconds from `sendto` of a strength update to the value being in the store (which the
    engine thread reads at its next frame), one message at a time."""
    store = ParamStore()
    arrived = threading.Event()
    stamp = [0.0]

    def on_change(name: str, value: Any) -> None:
        stamp[0] = time.perf_counter()
        arrived.set()

    store.subscribe(on_change)
    dgrams = []
    for i in range(samples):  # alternate, so every message is a change
        dgrams.append(build_message("/dreamcam/strength", 0.25 if i % 2 else 0.75))
    lat, lost = [], 0
    with OscServer(store, host=host, port=0) as srv, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for d in dgrams:
            arrived.clear()
            t0 = time.perf_counter()
            sock.sendto(d, (host, srv.port))
            if arrived.wait(1.0):
                lat.append((stamp[0] - t0) * 1000.0)
            else:
                lost += 1
    return {
        "osc_latency_p50_ms": _pct(lat, 50),
        "osc_latency_p99_ms": _pct(lat, 99),
        "osc_latency_max_ms": round(max(lat), 3) if lat else float("nan"),
        "osc_latency_samples": len(lat),
        "osc_latency_lost": lost,
    }


FLOOD_KINDS = {
    "garbage": lambda i: b"\x17not OSC at all, datagram %08d" % i,
    "unknown_address": lambda i: b"/dreamcam/x%07d\0\0,f\0\0" % i + bytes(4),  # each one different
    "not_finite": lambda i: build_message("/dreamcam/strength", float("nan")),  # the same one repeated
}


def osc_flood(n: int = 20_000, *, host: str = "127.0.0.1") -> dict[str, Any]:
    """For each kind of junk: `n` datagrams of it sent as fast as one socket can, then one valid
    strength update; how fast the server drained them and when the update landed (milliseconds
    after the last junk datagram was sent; the target is under 100)."""
    out: dict[str, Any] = {"flood_datagrams": n}
    for kind, make in FLOOD_KINDS.items():
        store = ParamStore()
        landed = threading.Event()
        stamp = [0.0]

        def on_change(name: str, value: Any) -> None:
            stamp[0] = time.perf_counter()
            landed.set()

        store.subscribe(on_change)
        junk = [make(i) for i in range(n)]
        valid = build_message("/dreamcam/strength", 0.125)
        with OscServer(store, host=host, port=0) as srv, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            t0 = time.perf_counter()
            for d in junk:
                sock.sendto(d, (host, srv.port))
            t1 = time.perf_counter()
            sock.sendto(valid, (host, srv.port))
            ok = landed.wait(30)
            while srv.received < n + 1 and time.perf_counter() - t1 < 30:
                time.sleep(0.001)
            t2 = time.perf_counter()
            out[f"flood_{kind}_drained_per_s"] = round(srv.received / (t2 - t0))
            out[f"flood_{kind}_valid_ms"] = round((stamp[0] - t1) * 1000.0, 1) if ok else float("nan")
            out[f"flood_{kind}_lost"] = n + 1 - srv.received
    return out


def frame_timing_under_burst(
    *,
    burst: int = 10_000,
    frames: int = 30,
    width: int = 64,
    height: int = 64,
    engine: Any = None,
    max_bursts: int = 20,
) -> dict[str, Any]:
    """Frame times (controller.apply + img2img) of an engine loop: steady, with the strength
    changing every frame (no OSC), and during OSC bursts (which also change it every frame).

    Bursts of `burst` messages are sent one after another until `frames` frames ran while the
    server was receiving one (at most `max_bursts`). A CPU engine runs with one torch thread here
    (restored after) so that the timing shows the OSC work, not torch threads spin-waiting.
    """
    if engine is None:
        engine = StreamEngine(tiny_pipeline(0), [35], width, height, cfg_type="self")
        engine.prepare("a watercolor portrait", seed=2)
    threads = torch.get_num_threads()
    if engine.device.type == "cpu":
        torch.set_num_threads(1)
    store = ParamStore({"prompt": "a watercolor portrait"})
    img = np.random.default_rng(0).integers(0, 256, (engine.height, engine.width, 3), dtype=np.uint8)
    try:
        with OscServer(store, port=0) as srv, Controller(engine, store) as ctrl, BurstSender(srv.port, burst) as sender:

            def frame_ms() -> float:
                t0 = time.perf_counter()
                ctrl.apply()
                engine.img2img(img)
                if engine.device.type == "cuda":
                    torch.cuda.synchronize(engine.device)
                return (time.perf_counter() - t0) * 1000.0

            for _ in range(3):  # warm-up
                frame_ms()
            base = [frame_ms() for _ in range(frames)]
            changing = []  # a new strength every frame, as a moving slider gives, without OSC
            for i in range(frames):
                store.set("strength", 0.3 + 0.4 * (i % 2))
                changing.append(frame_ms())
            during: list[float] = []
            bursts, burst_s = 0, []
            while len(during) < frames and bursts < max_bursts:
                bursts += 1
                target = bursts * burst
                t0 = time.perf_counter()
                sender.go()
                while srv.received < target and time.perf_counter() - t0 < 60:
                    during.append(frame_ms())
                while srv.received < target and time.perf_counter() - t0 < 60:
                    time.sleep(0.001)
                burst_s.append(time.perf_counter() - t0)
            received, final = srv.received, store.get("strength")
    finally:
        torch.set_num_threads(threads)
    return {
        "frame_ms_p50": _pct(base, 50),
        "frame_ms_p99": _pct(base, 99),
        "frame_ms_changing_p50": _pct(changing, 50),
        "frame_ms_changing_p99": _pct(changing, 99),
        "frame_ms_burst_p50": _pct(during, 50),
        "frame_ms_burst_p99": _pct(during, 99),
        "frames": len(base),
        "burst_frames": len(during),
        "bursts": bursts,
        "burst_messages": burst,
        "burst_received": received,
        "burst_lost": bursts * burst - received,
        "burst_last_value_applied": bool(abs(final - sender.last) < 1e-6),
        "burst_s_mean": round(float(np.mean(burst_s)), 3),
        "rcvbuf_bytes": srv.rcvbuf,
        "engine": f"{engine.width}x{engine.height} {engine.device.type}",
    }


def bench_osc(
    *, samples: int = 1000, burst: int = 10_000, frames: int = 30, width: int = 64, height: int = 64, engine: Any = None
) -> dict[str, Any]:
    """The OSC measurements in one dict (milliseconds; p50/p99). Target: osc_latency_p99_ms < 5,
    frame_ms_burst_* within noise of frame_ms_*, flood_*_valid_ms < 100."""
    out = osc_latency(samples)
    out.update(osc_flood())
    out.update(frame_timing_under_burst(burst=burst, frames=frames, width=width, height=height, engine=engine))
    return out
