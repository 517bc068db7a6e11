"""A real headless OBS with the dreamcam script: its *MIDI learn* list offers the knobs a MIDI
control can drive, and its button arms learn in dreamcam for the chosen knob (over OSC, to
dreamcam's own server); the next control moved on the MIDI controller (a stand-in port of mido's
own API: no MIDI device exists here) then drives that knob and is saved in the map file."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dreamcam.control.maps import ControllerMap
from dreamcam.control.midi.controller import MidiController
from dreamcam.control.osc.server import OscServer
from dreamcam.knobs import PARAMS, ParamStore

TESTS = Path(__file__).resolve().parents[1]
SCRIPTS = TESTS.parent / "obs_scripts"
sys.path.insert(0, str(TESTS))

from midi_standin import StandInDevice, cc  # noqa: E402
from obs_harness import OBS_MARKS, ObsStudio  # noqa: E402

pytestmark = OBS_MARKS

# Loaded after dreamcam_obs.py in the same OBS: builds the properties with OBS's real API, logs
# the MIDI learn list, and presses the button as the Scripts dialog would (its callback).
PROBE = """
import json
import obspython as obs
import dreamcam_obs

def _probe():
    if dreamcam_obs._link is None or dreamcam_obs._settings is None:
        return
    obs.timer_remove(_probe)
    props = dreamcam_obs.script_properties()
    learn = obs.obs_properties_get(props, "midi_learn")
    names = [obs.obs_property_list_item_string(learn, i) for i in range(obs.obs_property_list_item_count(learn))]
    button = obs.obs_properties_get(props, "midi_learn_go")
    dreamcam_obs._on_learn(props, button)
    obs.obs_properties_destroy(props)
    obs.script_log(obs.LOG_INFO, "probe: " + json.dumps(names))

def script_load(settings):
    obs.timer_add(_probe, 200)
"""


def test_real_obs_arms_midi_learn_for_the_chosen_knob(tmp_path):
    probe = tmp_path / "dreamcam_probe.py"
    probe.write_text(PROBE)
    map_path = tmp_path / "controller.toml"
    store = ParamStore()
    device = StandInDevice("stand-in")
    midi = None
    with OscServer(store, port=0, status=lambda: midi.status() if midi else {}) as server:
        midi = MidiController(server, None, device, device, map_path=map_path, on_learn=lambda line: None).start()
        try:
            with ObsStudio(scripts=[(SCRIPTS / "dreamcam_obs.py", {"port": server.port, "midi_learn": "delta"}),
                                    (probe, {})]) as studio:
                names = json.loads(studio.wait_for_log(r"probe: (.*)").group(1))
                assert names == [p.name for p in PARAMS.values() if p.kind is not str]  # not the prompts, not preset
                deadline = time.monotonic() + 20.0
                while midi.status()["midi"]["learn"] != "delta":
                    assert time.monotonic() < deadline, "OBS's MIDI learn button did not arm learn in dreamcam"
                    time.sleep(0.05)
                device.move(cc(9, 127))
                while store.get("delta") != 5.0:
                    device.move(cc(9, 127))  # once learned, the control drives delta
                    assert time.monotonic() < deadline, f"the learned control does not drive delta: {store.snapshot()}"
                    time.sleep(0.05)
                assert "Traceback" not in studio.log_text()
        finally:
            midi.close()
    assert ControllerMap.load(map_path).find_midi("cc", 9, 1).param == "delta"
