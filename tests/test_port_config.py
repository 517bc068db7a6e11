"""Portability: config files as Windows tools write them (UTF-8 with a byte-order mark)."""

from __future__ import annotations

import codecs

from dreamcam.control.osc.maps import OscMapping
from dreamcam.control.presets import PresetLibrary

PRESETS = '[watercolor]\nprompt = "aquarelle, café"\nstrength = 0.45\n'
MAPPING = '[[bind]]\naddress = "/1/fader1"\nparam = "strength"\n'


def _write_with_bom(path, text):
    # what Windows PowerShell 5.1's `Set-Content -Encoding UTF8` writes
    path.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    return path


def test_presets_file_with_bom_loads(tmp_path):
    lib = PresetLibrary(_write_with_bom(tmp_path / "presets.toml", PRESETS))
    assert lib.names() == ["watercolor"]
    assert lib.get("watercolor") == {"prompt": "aquarelle, café", "strength": 0.45}


def test_presets_reload_of_a_file_saved_with_bom(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text(PRESETS, encoding="utf-8")
    lib = PresetLibrary(path, min_interval=0.0, settle=0.0)
    _write_with_bom(path, PRESETS.replace("[watercolor]", "[ink]"))
    assert lib.maybe_reload(force=True)
    assert lib.names() == ["ink"] and lib.errors == 0


def test_osc_map_file_with_bom_loads(tmp_path):
    mapping = OscMapping.load(_write_with_bom(tmp_path / "touchosc.toml", MAPPING))
    assert mapping.get("/1/fader1") is not None


def test_presets_and_osc_map_paths_expand_tilde(tmp_path, monkeypatch):
    # `--presets ~/presets.toml` from cmd.exe or PowerShell reaches dreamcam with the ~ unexpanded
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    (tmp_path / "presets.toml").write_text(PRESETS, encoding="utf-8")
    (tmp_path / "touchosc.toml").write_text(MAPPING, encoding="utf-8")
    assert PresetLibrary("~/presets.toml").names() == ["watercolor"]
    assert OscMapping.load("~/touchosc.toml").get("/1/fader1") is not None
