"""A real headless OBS with the dreamcam script and a real `dreamcam run` (tiny model, test
pattern): dreamcam ends up with the values set in OBS whether it was running when the script
loaded or started (again) later, and a knob the user never touched in OBS (bypass) is never
sent: a `dreamcam run --bypass` stays in bypass."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from obs_harness import OBS_MARKS, ObsStudio, free_port

pytestmark = OBS_MARKS

SCRIPT = Path(__file__).resolve().parents[2] / "obs_scripts" / "dreamcam_obs.py"
OBS_VALUES = {"prompt": "an oil painting of a harbour", "strength": 0.55, "seed": 1234}


@contextlib.contextmanager
def dreamcam_run(port: int, log_path: Path, *flags: str):
    """`dreamcam run` with the tiny model on the CPU, OSC on 127.0.0.1:port; Ctrl-C'd at the end."""
    cmd = [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--device", "cpu", "--source", "testpattern",
           "--sink", "null", "--width", "64", "--height", "64", "--osc-port", str(port), *flags]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dreamcam_state(port: int) -> dict | None:
    """dreamcam's /dreamcam/state JSON, asked for as any OSC client does; None without an answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(OscMessageBuilder(address="/dreamcam/status").build().dgram, ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(65536)
        except (TimeoutError, ConnectionRefusedError):
            return None
    return json.loads(OscMessage(data).params[0])


def has_obs_values(state: dict | None) -> bool:
    return (state is not None and state.get("prompt") == OBS_VALUES["prompt"] and state.get("seed") == OBS_VALUES["seed"]
            and abs(state.get("strength", -1) - OBS_VALUES["strength"]) < 1e-6)


def wait_for_state(port: int, predicate, *, timeout_s: float, what: str, log_path: Path) -> dict:
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = dreamcam_state(port)
        if predicate(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout_s} s; last state {state}; dreamcam said:\n{log_path.read_text()}")


def test_a_running_dreamcam_gets_the_obs_values_when_the_script_loads_and_keeps_its_bypass(tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    log_path = tmp_path / "dreamcam.txt"
    with dreamcam_run(port, log_path, "--bypass"):  # running, in bypass, with its defaults, before OBS starts
        first = wait_for_state(port, lambda s: s is not None and not s.get("loading"), timeout_s=90,
                               what="running dreamcam", log_path=log_path)
        assert first["bypass"] is True and not has_obs_values(first)
        with ObsStudio(scripts=[(SCRIPT, dict(OBS_VALUES, port=port))]) as studio:
            wait_for_state(port, has_obs_values, timeout_s=20, what="OBS's values in dreamcam", log_path=log_path)
            studio.wait_for_log(r"status: connected: ")
            time.sleep(1.5)  # three more polls: nothing else may arrive
            state = dreamcam_state(port)
            assert state["bypass"] is True, "the script turned off the bypass the user never touched in OBS"
            assert has_obs_values(state)
            assert "Traceback" not in studio.log_text()


def test_a_restarted_dreamcam_gets_the_obs_values_again(tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    log_path = tmp_path / "dreamcam.txt"
    with ObsStudio(scripts=[(SCRIPT, dict(OBS_VALUES, port=port))]) as studio:
        studio.wait_for_log(r"status: (waiting for|no answer from) dreamcam")
        instances = []
        for run in range(2):  # started after OBS, then restarted: each time with its defaults and in bypass
            with dreamcam_run(port, log_path, "--bypass"):
                state = wait_for_state(port, has_obs_values, timeout_s=45, what=f"OBS's values in dreamcam run {run + 1}",
                                       log_path=log_path)
                time.sleep(1.5)  # three more polls: nothing else may arrive
                state = dreamcam_state(port)
                assert state["bypass"] is True, "the script turned off the bypass the user never touched in OBS"
                assert has_obs_values(state)
                instances.append(state.get("instance"))
        assert "Traceback" not in studio.log_text()
    assert None not in instances and instances[0] != instances[1], instances
