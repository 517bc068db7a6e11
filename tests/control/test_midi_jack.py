"""MIDI through a real rtmidi port: python-rtmidi's JACK API with a JACK server on its dummy
driver (no sound card, no MIDI device). The ALSA sequencer cannot be opened on the test machines
(no /dev/snd/seq, no kernel modules to load in a container), so JACK is the MIDI system here on
which rtmidi virtual ports open. A virtual output and input port stand for the controller (what
its faders send, what its motor faders and lights receive); dreamcam finds them by name through
`ports.open_ports`, as `--midi` does. Skipped where `jackd` is not installed.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest
from dreamcam.control.maps import ControllerMap
from dreamcam.control.midi.controller import MidiController
from dreamcam.control.midi.ports import list_ports, open_ports
from dreamcam.control.osc.server import OscServer
from dreamcam.knobs import ParamStore
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from waiting import poll as wait_for

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "dreamcam-test-nano"

pytestmark = pytest.mark.skipif(shutil.which("jackd") is None, reason="jackd is not installed (apt install jackd2)")


def _die_with_parent() -> None:
    """In the child: end when the test process ends, even one that crashes before teardown."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture
def jack(monkeypatch):
    """A JACK server of this test's own, on the dummy driver; its name in $JACK_DEFAULT_SERVER."""
    name = f"dreamcam-test-{os.getpid()}"
    env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}
    proc = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", "48000", "-p", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    deadline = time.monotonic() + 20
    while not any(s.api == "UNIX_JACK" for s in list_ports()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip("jackd did not start here")
        time.sleep(0.2)
    yield name
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def device(jack):
    """The controller: a virtual output (its faders) and a virtual input (its lights) on JACK."""
    out = mido.open_output(DEVICE, virtual=True, api="UNIX_JACK", client_name=DEVICE)
    inp = mido.open_input(DEVICE, virtual=True, api="UNIX_JACK", client_name=DEVICE)  # JACK names it DEVICE-01:DEVICE
    yield out, inp
    out.close()
    inp.close()


def status(port: int) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5.0)
    try:
        s.sendto(OscMessageBuilder("/dreamcam/status").build().dgram, ("127.0.0.1", port))
        return json.loads(OscMessage(s.recvfrom(65535)[0]).params[0])
    finally:
        s.close()


def test_a_real_rtmidi_port_steers_and_gets_feedback(device):
    faders, lights = device
    inport, outport = open_ports("test-nano")  # a part of the name, as --midi takes it
    mapping = ControllerMap.parse('[[bind]]\ncc = 7\nparam = "strength"\n\n[[bind]]\nnote = 36\nparam = "bypass"\n')
    store = ParamStore()
    with OscServer(store, port=0, mapping=mapping) as osc, MidiController(osc, mapping, inport, outport):
        assert DEVICE in inport.name and outport is not None and DEVICE in outport.name  # the device's own output
        faders.send(mido.Message("control_change", control=7, value=127))
        faders.send(mido.Message("note_on", note=36, velocity=90))
        assert wait_for(lambda: (status(osc.port)["strength"], status(osc.port)["bypass"]) == (1.0, True))
        got = []
        store.set("strength", 0.0)  # from elsewhere: the fader goes down, over JACK
        assert wait_for(lambda: got.extend(lights.iter_pending()) or any(
            m.type == "control_change" and m.control == 7 and m.value == 0 for m in got))
        assert any(m.type == "note_on" and m.note == 36 and m.velocity == 127 for m in got)  # the pad's light


@pytest.mark.slow
def test_dreamcam_run_with_midi_and_learn(device, tmp_path):
    """`dreamcam run --midi ... --learn --map FILE` as a user runs it: a control is moved, its
    knob typed on the console, and the map file holds the binding; the control then steers."""
    faders, _ = device
    map_path = tmp_path / "nano.toml"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--device", "cpu", "--width", "64",
           "--height", "64", "--source", "testpattern", "--sink", "null", "--osc-port", "0",
           "--midi", DEVICE, "--learn", "--map", str(map_path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines = []
    try:
        port = None
        while not any("learn: move a control" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "dreamcam stopped: " + "".join(lines)
            lines.append(line)
            m = re.search(r"OSC on 127\.0\.0\.1:(\d+)", line)
            port = int(m[1]) if m else port
        faders.send(mido.Message("control_change", control=3, value=10, channel=4))
        assert wait_for(lambda: status(port)["midi"]["received"] == 1)
        proc.stdin.write("guidance\n")
        proc.stdin.flush()
        assert wait_for(lambda: status(port)["midi"]["learned"] == "cc 3 on channel 5 -> guidance")
        assert map_path.read_text() == '[[bind]]\ncc = 3\nchannel = 5\nparam = "guidance"\n'
        faders.send(mido.Message("control_change", control=3, value=127, channel=4))
        assert wait_for(lambda: status(port)["guidance"] == 20.0)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, rest = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, rest = proc.communicate()
    text = "".join(lines) + rest
    assert "MIDI from" in text and "feedback to" in text and "error" not in text
