"""The OBS script's link gets every preset name from a dreamcam whose preset list is too long
for one state reply: 300 presets with 250-character names, against dreamcam's real OSC server
over loopback UDP (the state reply carries the first names and `presets_total`; the link asks
for the rest with /dreamcam/presets PAGE)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dreamcam.control.osc.server import OscServer
from dreamcam.control.presets import PresetLibrary
from dreamcam.knobs import ParamStore

# the OBS script runs in OBS's own Python: its modules are imported from obs_scripts/, not installed
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "obs_scripts"))

import dreamcam_link as dl  # noqa: E402


def _names(n):
    return [f"{i:03d}" + "n" * 247 for i in range(n)]


def test_a_preset_list_longer_than_one_reply_arrives_whole(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text("".join(f'["{name}"]\nseed = {i}\n' for i, name in enumerate(_names(300))))
    with OscServer(ParamStore(), port=0, presets=PresetLibrary(path)) as srv, dl.DreamcamLink("127.0.0.1", srv.port) as link:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(link.presets) < 300:
            link.poll()
            time.sleep(0.05)
        assert link.state is not None and link.state["presets_total"] == 300
        assert 0 < len(link.state["presets"]) < 300  # the state reply alone could not carry them
        assert link.presets == _names(300)
        # stepping through presets reaches the last one, which only a page carried
        link.current_preset = _names(300)[0]
        assert link.step_preset(-1) == _names(300)[-1]


def test_a_short_preset_list_needs_no_pages(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text('[calm]\nseed = 1\n["neon city"]\nseed = 2\n')
    with OscServer(ParamStore(), port=0, presets=PresetLibrary(path)) as srv, dl.DreamcamLink("127.0.0.1", srv.port) as link:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not link.presets:
            link.poll()
            time.sleep(0.05)
        for _ in range(5):
            link.poll()
            time.sleep(0.05)
        assert link.presets == ["calm", "neon city"]
        assert "presets_total" not in link.state or link.state["presets_total"] == 2
