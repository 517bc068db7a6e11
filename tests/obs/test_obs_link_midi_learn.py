"""The OBS script's MIDI learn (`DreamcamLink.learn`, what its "MIDI learn" button sends) against
dreamcam's real OSC server over UDP, with a MIDI controller stand-in on mido's own port API (no
MIDI device exists here): the knob chosen in OBS is armed, the status line says so, the next
control moved binds to it and the map file holds the binding."""

from __future__ import annotations

import sys
from pathlib import Path

from dreamcam.control.maps import ControllerMap
from dreamcam.control.midi.controller import MidiController
from dreamcam.control.osc.server import OscServer
from dreamcam.knobs import ParamStore
from midi_standin import StandInDevice, cc

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "obs_scripts"))

import dreamcam_link as dl  # noqa: E402
from waiting import wait_until  # noqa: E402


def test_learn_from_obs_binds_the_next_control_moved(tmp_path):
    map_path = tmp_path / "nano.toml"
    store = ParamStore()
    device = StandInDevice("stand-in")
    midi = None
    with OscServer(store, port=0, status=lambda: midi.status() if midi else {}) as osc:
        midi = MidiController(osc, None, device, device, map_path=map_path, on_learn=lambda line: None).start()
        try:
            with dl.DreamcamLink("127.0.0.1", osc.port) as link:
                assert "guidance" in dl.learnable(link.params) and "prompt" not in dl.learnable(link.params)
                assert link.learn("guidance")
                wait_until(lambda: link.poll().endswith("; MIDI learn guidance: move a control"),
                           what="the status line saying learn is armed")
                device.move(cc(12, 127, channel=2))
                wait_until(lambda: midi.last_learned == "cc 12 on channel 2 -> guidance", what="the binding")
                assert ControllerMap.load(map_path).find_midi("cc", 12, 2).param == "guidance"
                device.move(cc(12, 0, channel=2))
                wait_until(lambda: store.get("guidance") == 0.0, what="the learned control steering")
                wait_until(lambda: "MIDI learn" not in link.poll(), what="the status line without learn")
        finally:
            midi.close()
