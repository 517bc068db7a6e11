"""The OBS script has no copy of its own of the knob ranges: they come from the knob table only
(obs_scripts/dreamcam_knobs.json, or a running dreamcam's /dreamcam/knobs reply).

Checked two ways: the script's sources hold no number that is a range bound or step of the
table, and a real headless OBS loading the script beside a changed table shows and checks the
changed ranges."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from obs_harness import ObsStudio, missing_reason

from dreamcam.knobs import PARAMS

SCRIPTS = Path(__file__).resolve().parents[2] / "obs_scripts"
TRIVIAL = {0, 1, 2, 4, 16}  # indices, flags, powers of two (2**31), 2 s timeouts, OSC's 4-byte alignment and
# 16-byte headers: no bound of their own (the ControlNet scale range is 0..2, attn_bank 0..4, attn_refresh 1..16)


def test_the_script_sources_hold_no_range_of_the_knob_table():
    bounds = {v for p in PARAMS.values() for v in (p.lo, p.hi, p.step) if v is not None} - TRIVIAL
    found = []
    for path in sorted(SCRIPTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value in bounds:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found, f"a second copy of a knob range (take it from dreamcam_knobs.json): {found}"


# Loaded after dreamcam_obs.py: builds its properties with OBS's real API, logs each numeric
# property's range and what the script's own check says of two values.
PROBE = """
import json
import obspython as obs
import dreamcam_obs
import dreamcam_link

def _verdict(name, value):
    try:
        dreamcam_link.coerce(name, value)
        return "ok"
    except ValueError as e:
        return str(e)

def _probe():
    obs.timer_remove(_probe)
    props = dreamcam_obs.script_properties()
    found = {}
    for name in ("strength", "guidance", "seed"):
        prop = obs.obs_properties_get(props, name)
        kind = "float" if name != "seed" else "int"
        found[name] = [getattr(obs, f"obs_property_{kind}_{k}")(prop) for k in ("min", "max", "step")]
    obs.obs_properties_destroy(props)
    found["checks"] = [_verdict("guidance", 30.0), _verdict("strength", 0.95)]
    obs.script_log(obs.LOG_INFO, "probe: " + json.dumps(found))

def script_load(settings):
    obs.timer_add(_probe, 200)
"""


@pytest.mark.obs
@pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))
def test_real_obs_takes_the_ranges_from_the_table_beside_the_script(tmp_path):
    scripts = tmp_path / "obs_scripts"
    shutil.copytree(SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    table = json.loads((scripts / "dreamcam_knobs.json").read_text())
    changed = {"strength": (0.1, 0.9, 0.05), "guidance": (0.0, 33.0, 0.5), "seed": (5, 999, 2)}
    for knob in table:
        if knob["name"] in changed:
            knob["min"], knob["max"], knob["step"] = changed[knob["name"]]
    (scripts / "dreamcam_knobs.json").write_text(json.dumps(table))
    (tmp_path / "dreamcam_probe.py").write_text(PROBE)
    # no dreamcam answers on this port: the script has only the table beside it
    with ObsStudio(scripts=[(scripts / "dreamcam_obs.py", {"port": 9}), (tmp_path / "dreamcam_probe.py", {})]) as studio:
        found = json.loads(studio.wait_for_log(r"probe: (.*)").group(1))
        assert "Traceback" not in studio.log_text()
    assert {k: tuple(v) for k, v in found.items() if k != "checks"} == changed
    assert found["checks"] == ["ok", "strength must be between 0.1 and 0.9, got 0.95"]

