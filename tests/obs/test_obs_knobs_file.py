"""The OBS script's knob table: obs_scripts/dreamcam_knobs.json is `dreamcam knobs --json` (kept
in sync here), and the script's parameters are read from it, so it accepts what dreamcam accepts
(see test_obs_script_knob_ranges.py for the same in a real OBS)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from dreamcam.cli.knobs import table_json
from dreamcam.knobs import PARAMS

SCRIPTS = Path(__file__).resolve().parents[2] / "obs_scripts"
sys.path.insert(0, str(SCRIPTS))

import dreamcam_link as dl  # noqa: E402

KINDS = {str: "text", float: "float", int: "int", bool: "bool"}


def test_the_json_file_is_what_dreamcam_knobs_json_prints():
    written = (SCRIPTS / "dreamcam_knobs.json").read_text(encoding="utf-8")
    assert written == table_json(), (
        "obs_scripts/dreamcam_knobs.json is out of date: write it anew with "
        "dreamcam knobs --json > obs_scripts/dreamcam_knobs.json"
    )


def test_the_script_parameters_are_the_knob_table_exactly():
    assert set(dl.PARAM_BY_NAME) == set(PARAMS)
    for name, p in PARAMS.items():
        ours = dl.PARAM_BY_NAME[name]
        assert (ours.kind, ours.default, ours.lo, ours.hi) == (KINDS[p.kind], p.default, p.lo, p.hi), name
        if p.kind is str:
            assert ours.max_len == p.max_len, name


def test_the_script_accepts_what_dreamcam_accepts_and_refuses_the_rest():
    assert dl.coerce("guidance", 7.5) == 7.5 and dl.coerce("guidance", 20) == 20.0
    with pytest.raises(ValueError, match="guidance must be between 0.0 and 20.0"):
        dl.coerce("guidance", 20.5)
    assert dl.coerce("preset", "x" * PARAMS["preset"].max_len)
    with pytest.raises(ValueError, match="dreamcam accepts at most 256"):
        dl.coerce("preset", "x" * 257)


def test_a_missing_or_broken_table_file_says_how_to_write_it(tmp_path):
    with pytest.raises(ValueError, match=r"dreamcam knobs --json > .*dreamcam_knobs\.json"):
        dl.read_knobs(str(tmp_path / "dreamcam_knobs.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"name": "strength"}]')
    with pytest.raises(ValueError, match="write the file anew"):
        dl.read_knobs(str(broken))
