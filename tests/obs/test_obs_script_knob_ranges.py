"""A real headless OBS with the dreamcam script: its properties show the knob table's ranges and
steps (from obs_scripts/dreamcam_knobs.json), it sends dreamcam's own OSC server a value the
script's old copy of the table refused (guidance 7.5: the copy said 0..5, dreamcam 0..20), and
it shows and sends a knob only the running dreamcam has (learnt from /dreamcam/knobs)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from dreamcam.control.osc.server import OscServer
from dreamcam.knobs import PARAMS, Apply, Param, ParamStore

TESTS = Path(__file__).resolve().parents[1]
SCRIPTS = TESTS.parent / "obs_scripts"
sys.path.insert(0, str(TESTS))

from obs_harness import OBS_MARKS, ObsStudio  # noqa: E402

pytestmark = OBS_MARKS

# Loaded after dreamcam_obs.py in the same OBS: builds its properties with OBS's real API and
# logs each numeric property's range (OBS only builds properties when its Scripts dialog opens).
PROBE = """
import json
import obspython as obs
import dreamcam_obs

def _probe():
    obs.timer_remove(_probe)
    props = dreamcam_obs.script_properties()
    found = {}
    for p in dreamcam_obs.PARAMS:
        prop = obs.obs_properties_get(props, p.name)
        if p.kind == "float":
            found[p.name] = [obs.obs_property_float_min(prop), obs.obs_property_float_max(prop),
                             obs.obs_property_float_step(prop)]
        elif p.kind == "int":
            found[p.name] = [obs.obs_property_int_min(prop), obs.obs_property_int_max(prop),
                             obs.obs_property_int_step(prop)]
    obs.obs_properties_destroy(props)
    obs.script_log(obs.LOG_INFO, "probe: " + json.dumps(found))

def script_load(settings):
    obs.timer_add(_probe, 200)
"""


def test_real_obs_shows_the_table_ranges_and_sends_guidance_7_5_to_dreamcam(tmp_path):
    probe = tmp_path / "dreamcam_probe.py"
    probe.write_text(PROBE)
    store = ParamStore()
    with OscServer(store, port=0) as server, \
            ObsStudio(scripts=[(SCRIPTS / "dreamcam_obs.py", {"port": server.port, "guidance": 7.5, "delta": 4.5}),
                               (probe, {})]) as studio:
        deadline = time.monotonic() + 20.0
        while (store.get("guidance"), store.get("delta")) != (7.5, 4.5):
            assert time.monotonic() < deadline, f"OBS did not send guidance 7.5 and delta 4.5: {store.snapshot()}"
            time.sleep(0.05)
        found = json.loads(studio.wait_for_log(r"probe: (.*)").group(1))
        want = {p.name: [p.lo, p.hi, p.step] for p in PARAMS.values() if p.kind in (float, int)}
        assert found == want
        assert "Traceback" not in studio.log_text()
        assert server.rejected["out_of_range"] == 0


# Waits until the link has dreamcam's own knob table (with `grain`, which dreamcam_knobs.json
# lacks), then builds the properties, sets grain as a user would and lets the script send it.
PROBE_NEW_KNOB = """
import json
import obspython as obs
import dreamcam_obs

def _probe():
    link = dreamcam_obs._link
    if link is None or "grain" not in {p.name for p in link.params}:
        return
    obs.timer_remove(_probe)
    props = dreamcam_obs.script_properties()
    prop = obs.obs_properties_get(props, "grain")
    found = None if prop is None else [obs.obs_property_description(prop), obs.obs_property_float_min(prop),
                                       obs.obs_property_float_max(prop), obs.obs_property_float_step(prop)]
    obs.obs_properties_destroy(props)
    obs.obs_data_set_double(dreamcam_obs._settings, "grain", 0.3)
    dreamcam_obs.script_update(dreamcam_obs._settings)
    obs.script_log(obs.LOG_INFO, "probe: " + json.dumps(found))

def script_load(settings):
    obs.timer_add(_probe, 200)
"""


def test_real_obs_shows_and_sends_a_knob_only_the_running_dreamcam_has(tmp_path, monkeypatch):
    """dreamcam's table gains a knob (monkeypatched in this process, where its OSC server runs);
    the script's file lacks it. The script learns it from /dreamcam/knobs, shows it with its
    range, and sends it once it is set in OBS, never before (its default stays dreamcam's)."""
    monkeypatch.setitem(PARAMS, "grain", Param("grain", float, 0.2, "film grain over the output", 0.0, 1.0,
                                               label="Film grain", step=0.01, apply=Apply.FENCE, setter="set_grain"))
    probe = tmp_path / "dreamcam_probe.py"
    probe.write_text(PROBE_NEW_KNOB)
    store = ParamStore()
    grain = []
    store.subscribe(lambda name, value: grain.append(value) if name == "grain" else None)
    with OscServer(store, port=0) as server, \
            ObsStudio(scripts=[(SCRIPTS / "dreamcam_obs.py", {"port": server.port}), (probe, {})]) as studio:
        found = json.loads(studio.wait_for_log(r"probe: (.*)").group(1))
        assert found == ["Film grain", 0.0, 1.0, 0.01]
        deadline = time.monotonic() + 20.0
        while store.get("grain") != pytest.approx(0.3):  # OSC f is float32
            assert time.monotonic() < deadline, f"OBS did not send grain 0.3: {store.snapshot()}"
            time.sleep(0.05)
        assert "Traceback" not in studio.log_text()
    assert grain == [pytest.approx(0.3)]
