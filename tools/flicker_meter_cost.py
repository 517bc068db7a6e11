"""What the flicker meter costs a fast live loop, on any machine (no GPU, no model).

`dreamcam bench --loop --flicker-rate 10` measures the meter's cost on a real engine; on a CPU the
engine is so slow that no meter could slow it measurably. This runs the live loop at the rate a
GPU engine sets (a 1280x720 test pattern -> the runner, framing to 512x512 -> a "backend" that is
one OpenCV blur, about 1 ms -> a null output), alternately without and with the meter (A B A B
...), and prints the loop fps of each and the difference. The meter's thread then competes with
the loop for the CPU and the GIL as it would beside a 150-200 fps engine.

    python tools/flicker_meter_cost.py --rounds 5 --seconds 4 --rate 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))

from dreamcam.runtime.flicker import FlickerMeter  # noqa: E402
from dreamcam.runtime.runner import Runner  # noqa: E402
from dreamcam.sinks.base import NullSink  # noqa: E402
from dreamcam.sources.testpattern import TestPatternSource  # noqa: E402


class BlurBackend:
    """A stand-in for a fast GPU engine: the frame blurred (about a millisecond of CPU)."""

    name = "blur"

    def process(self, frame: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(frame, (7, 7), 0)


def loop_fps(seconds: float, rate: float) -> tuple[float, dict]:
    source = TestPatternSource(1280, 720, fps=1000.0)
    meter = FlickerMeter(512, 512, rate=rate) if rate > 0 else None
    with NullSink(512, 512) as sink, source:
        if meter is not None:
            meter.start()
        runner = Runner(source, BlurBackend(), [sink], width=512, height=512, meter=meter)
        timer = threading.Timer(seconds, runner.stop)
        timer.start()
        t0 = time.perf_counter()
        summary = runner.run()
        elapsed = time.perf_counter() - t0
        if meter is not None:
            meter.close()
    return summary["frames"] / elapsed, summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rate", type=float, default=10.0, help="meter pairs a second")
    args = p.parse_args()
    without, with_meter, last = [], [], {}
    for r in range(args.rounds):
        without.append(loop_fps(args.seconds, 0)[0])
        fps, last = loop_fps(args.seconds, args.rate)
        with_meter.append(fps)
        print(f"round {r + 1}: {without[-1]:.1f} fps without, {fps:.1f} fps with the meter", flush=True)
    a, b = statistics.median(without), statistics.median(with_meter)
    print(f"median: {a:.1f} fps without, {b:.1f} fps with the meter ({100 * (1 - b / a):+.1f}% slower); "
          f"meter {last['flicker_samples'] + last['flicker_cuts']} pairs in the last round, "
          f"{last['flicker_ms']} ms CPU each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
