"""A real `dreamcam run` (tiny model, test pattern) with --link, --osc-compat td and a cue list:
a second Ableton Link peer in this process sets the tempo, which shows in /dreamcam/status over
UDP; StreamDiffusionTD's messages steer it and its reports reach a python-osc listener; a cue
steps. The Link peers meet over loopback on this machine."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient
from waiting import wait_until

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")
ENV = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}
HOST = "127.0.0.1"


def test_run_with_link_td_compat_and_cues(tmp_path):
    link = pytest.importorskip("link")
    presets = tmp_path / "show.toml"
    presets.write_text('cues = ["intro", "drop"]\n[intro]\nstrength = 0.3\n[drop]\nstrength = 0.8\n', encoding="utf-8")
    reports: dict[str, list] = {}
    d = Dispatcher()
    d.set_default_handler(lambda address, *args: reports.__setitem__(address, list(args)))
    listener = BlockingOSCUDPServer((HOST, 0), d)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    cmd = [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--device", "cpu", "--width", "64",
           "--height", "64", "--source", "testpattern", "--sink", "null", "--link", "--osc-compat", "td",
           "--osc-port", "0", "--osc-feedback", f"{HOST}:{listener.server_address[1]}", "--presets", str(presets),
           "--quantize", "off"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=ENV)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    peer = link.Link(120.0)
    peer.enabled = True
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(5)
    try:
        wait_until(lambda: any("OSC on" in ln for ln in lines), timeout_s=60, what="OSC to listen")
        port = int(re.search(r"OSC on 127\.0\.0\.1:(\d+)", "".join(lines))[1])

        def status() -> dict:
            sock.sendto(OscMessageBuilder("/dreamcam/status").build().dgram, (HOST, port))
            return json.loads(OscMessage(sock.recvfrom(65535)[0]).params[0])

        wait_until(lambda: peer.numPeers() >= 1, timeout_s=60, what="dreamcam to join the Link session")
        state = peer.captureSessionState()
        state.setTempo(133.0, peer.clock().micros())
        peer.commitSessionState(state)
        wait_until(lambda: abs(status()["tempo"] - 133.0) < 0.01, timeout_s=60, what="the peer's tempo in status")
        st = status()
        assert st["clock"] == "link" and st["link_peers"] >= 1

        td = SimpleUDPClient(HOST, port)
        td.send_message("/prompt_list", json.dumps([["a neon city", 0.7], ["rain", 0.3]]))
        td.send_message("/guidance_scale", 2.5)
        td.send_message("/dreamcam/cue", "next")
        wait_until(lambda: status()["cue"] == "intro", timeout_s=60, what="the cue")
        st = status()
        assert st["prompt"] == "a neon city:0.7 | rain:0.3" and st["guidance"] == 2.5 and st["strength"] == 0.3
        wait_until(lambda: "/stream-info/fps" in reports and "/server_active" in reports, timeout_s=60, what="TD reports")
        wait_until(lambda: any("live:" in ln for ln in lines), timeout_s=240, what="the live loop")
        wait_until(lambda: reports.get("/stream-info/state") == ["local_ready"], timeout_s=60, what="local_ready")
    finally:
        peer.enabled = False
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            proc.kill()
            sock.close()
            listener.shutdown()
            listener.server_close()
    text = "".join(lines)
    assert "Traceback" not in text, text
    assert "Ableton Link joined" in text
