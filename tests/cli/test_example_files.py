"""The example files the README's commands name (examples/presets.toml, examples/controller.toml,
examples/midi.toml) load with dreamcam's own loaders, and `dreamcam run` runs with them as they are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dreamcam.control.map_file import binding_toml
from dreamcam.control.maps import ControllerMap
from dreamcam.control.osc.dispatch import LEARN, addresses
from dreamcam.control.osc.maps import OscMapping
from dreamcam.control.presets import PresetLibrary
from dreamcam.knobs import ParamStore

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "examples" / "presets.toml"
CONTROLLER = ROOT / "examples" / "controller.toml"
MIDI = ROOT / "examples" / "midi.toml"


def test_the_presets_load_and_apply():
    presets = PresetLibrary(str(PRESETS))
    names = presets.names()
    assert {"watercolor", "neon city"} <= set(names)  # the two the README switches between
    for name in names:
        store = ParamStore()
        presets.apply(name, store)
        assert store.get("preset") == name and store.get("prompt")


def test_the_controller_map_loads_and_its_preset_buttons_name_real_presets():
    mapping = OscMapping.load(str(CONTROLLER))
    assert mapping.lfo == "strength sine 4 0.05"  # the map's LFO line (docs/control.md)
    mapping.check_presets(PresetLibrary(str(PRESETS)).names())  # a preset binding the file lacks would raise


def test_the_midi_map_loads_with_real_presets_and_addresses():
    mapping = ControllerMap.load(MIDI)
    assert len(mapping.midi) == 10 and not mapping.osc
    mapping.check_presets(PresetLibrary(str(PRESETS)).names())
    mapping.check_actions([*addresses(), LEARN])
    for b in mapping.all():  # what learn would write for each loads back as the same binding
        assert ControllerMap.parse(binding_toml(b)).all() == [b]


def test_dreamcam_run_takes_both_files(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--device", "cpu", "--width", "64",
           "--height", "64", "--source", "testpattern", "--sink", "null", "--frames", "2", "--osc-port", "0",
           "--presets", "examples/presets.toml", "--preset", "neon city", "--osc-map", "examples/controller.toml"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "done: 2 frames" in r.stderr and "error" not in r.stderr
