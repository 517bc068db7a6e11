"""Glass to glass into a real OBS Studio (headless, tests/obs_harness.py): numbered frames
(tests/coded_frames.py) -> dreamcam's UDP sink -> an OBS Media Source -> obs-websocket
screenshots polled as fast as OBS answers. Prints, per Media Source setting, how long after a
frame was handed to the sink OBS first showed it, and how long the first picture took.

    PYTHONPATH=plugin:tests python tools/obs_latency.py --engine-fps 30
    PYTHONPATH=plugin:tests python tools/obs_latency.py --engine-fps 2 --options "" "probesize=32"
"""

from __future__ import annotations

import argparse
import base64
import socket
import threading
import time

import cv2
import numpy as np
from coded_frames import H, W, code_of, coded
from obs_harness import SCENE, ObsStudio, free_port

from dreamcam.frames import Frame
from dreamcam.sinks.udp import UdpSink


def measure(options: str, engine_fps: float, seconds: float, codec: str) -> str:
    port, sent = free_port(socket.SOCK_DGRAM), {}
    with ObsStudio(width=W, height=H) as studio:
        sink = UdpSink("127.0.0.1", port, W, H, 30.0, codec=codec).start()
        stop = threading.Event()

        def feed() -> None:
            i = 0
            while not stop.is_set():
                sent[i] = time.perf_counter()
                sink.write(Frame(coded(i), sent[i], i))
                i += 1
                stop.wait(1 / engine_fps)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        time.sleep(1.0)  # the stream runs before the Media Source joins
        studio.client.create_input(SCENE, "m", "ffmpeg_source", {
            "is_local_file": False, "input": f"udp://127.0.0.1:{port}", "input_format": "mpegts",
            "hw_decode": False, "ffmpeg_options": options}, True)
        created, first, seen = time.perf_counter(), None, {}
        while time.perf_counter() - created < seconds:
            try:
                data = studio.client.get_source_screenshot("m", "png", None, None, None).image_data
            except Exception:  # noqa: BLE001 - 702 before the first frame
                time.sleep(0.02)
                continue
            t = time.perf_counter()
            img = cv2.imdecode(np.frombuffer(base64.b64decode(data.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
            if img.max() < 16:
                continue
            n = code_of(img)
            if n in sent:
                first = first or t - created
                seen.setdefault(n, t - sent[n])
        stop.set()
        feeder.join()
        sink.close()
    settled = [v for _, v in sorted(seen.items())[len(seen) // 3 :]]  # after the start-up
    if not settled:
        return f"{options or '(defaults)':24s} no picture within {seconds:g} s"
    return (f"{options or '(defaults)':24s} a new frame shows after {np.median(settled) * 1000:.0f} ms median, "
            f"p90 {np.percentile(settled, 90) * 1000:.0f} ms ({len(settled)} frames); first picture "
            f"{first:.2f} s after the source was created")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine-fps", type=float, default=30.0, help="frames/s handed to the sink (stream: 30)")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of screenshots per setting")
    ap.add_argument("--codec", default="auto", help="auto, h264 or mpeg2")
    ap.add_argument("--options", nargs="+", default=["", "probesize=32", "fflags=nobuffer probesize=32"],
                    help="Media Source 'FFmpeg Options' values to compare ('' = OBS's defaults)")
    args = ap.parse_args()
    for options in args.options:
        print(measure(options, args.engine_fps, args.seconds, args.codec), flush=True)


if __name__ == "__main__":
    main()
