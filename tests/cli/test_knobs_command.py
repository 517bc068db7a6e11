"""`dreamcam knobs` and `dreamcam knobs --json`: the knob table for people and for scripts,
from the real `dreamcam` command (a subprocess), without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dreamcam.control.osc.dispatch import addresses
from dreamcam.knobs import PARAMS

ROOT = Path(__file__).resolve().parents[2]


def dreamcam(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "plugin"))
    return subprocess.run([sys.executable, "-m", "dreamcam", *args], capture_output=True, text=True, timeout=120,
                          env=env, check=True)


def test_json_lists_every_knob_with_type_default_range_address_and_flag():
    knobs = json.loads(dreamcam("knobs", "--json").stdout)
    assert [k["name"] for k in knobs] == list(PARAMS)
    types = {"float": float, "int": int, "bool": bool, "str": str}
    for k in knobs:
        assert k["type"] in types, k
        assert type(k["default"]) is types[k["type"]], k
        for bound in ("min", "max"):
            assert k[bound] is None or (isinstance(k[bound], (int, float)) and not isinstance(k[bound], bool)), k
        if k["min"] is not None:
            assert k["min"] <= k["default"] <= k["max"], k
        assert k["osc"] == f"/dreamcam/{k['name']}" and k["osc"] in addresses(), k
        assert k["flag"] == "--" + k["name"].replace("_", "-"), k
    by_name = {k["name"]: k for k in knobs}
    assert (by_name["strength"]["min"], by_name["strength"]["max"], by_name["strength"]["default"]) == (0.0, 1.0, 0.4)
    assert by_name["guidance"]["max"] == 20.0


def test_every_knob_flag_is_in_dreamcam_run_help():
    text = dreamcam("run", "--help").stdout
    for p in PARAMS.values():
        assert p.flag in text, p.flag
        if p.range_text:
            assert p.range_text in " ".join(text.split()), p.name


def test_the_table_for_people_is_aligned_one_row_per_knob_with_its_help_below():
    lines = dreamcam("knobs").stdout.splitlines()
    header, body = lines[0], lines[1:]
    assert header.split()[:4] == ["knob", "type", "default", "range"]
    rows, helps = body[0::2], body[1::2]
    assert [r.split()[0] for r in rows] == list(PARAMS)
    assert helps == ["    " + p.help for p in PARAMS.values()]
    osc_col = header.index("OSC address")
    flag_col = header.index("flag")
    for row, p in zip(rows, PARAMS.values()):
        assert row[osc_col:].startswith(p.osc) and row[flag_col:].startswith(p.flag), row


def test_knobs_imports_no_torch():
    code = ("import sys; from dreamcam.cli.main import main; code = main(['knobs', '--json']); "
            "print('torch' in sys.modules, code, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "plugin")), check=True)
    assert r.stderr.strip() == "False 0"
    assert json.loads(r.stdout)
