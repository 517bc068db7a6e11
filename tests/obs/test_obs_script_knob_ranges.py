"""A real headless OBS with the dreamcam script: its properties show the knob table's ranges and
steps (from obs_scripts/dreamcam_knobs.json), and it sends dreamcam's own OSC server a value the
script's old copy of the table refused (guidance 7.5: the copy said 0..5, dreamcam 0..20)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dreamcam.control.osc.server import OscServer
from dreamcam.knobs import PARAMS, ParamStore

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
