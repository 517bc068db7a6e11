"""The OBS script's cue hotkeys (DreamcamLink.step_cue, without OBS) step the cue list of a
real dreamcam OSC server on a real socket; the script has no Cue property to edit."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "obs_scripts"))

import dreamcam_link as dl  # noqa: E402
import dreamcam_obs  # noqa: E402
from dreamcam.control.osc.server import OscServer  # noqa: E402
from dreamcam.control.presets import PresetLibrary  # noqa: E402
from dreamcam.knobs import ParamStore  # noqa: E402


def test_cue_hotkeys_step_dreamcams_cue_list(tmp_path):
    path = tmp_path / "show.toml"
    path.write_text('cues = ["a", "b"]\n[a]\nstrength = 0.2\n[b]\nstrength = 0.7\n', encoding="utf-8")
    store = ParamStore()
    with OscServer(store, port=0, presets=PresetLibrary(path)) as srv, dl.DreamcamLink("127.0.0.1", srv.port) as link:
        for how, want in (("next", "a"), ("next", "b"), ("previous", "a")):
            assert link.step_cue(how)
            deadline = time.monotonic() + 5
            while store.get("cue") != want and time.monotonic() < deadline:
                time.sleep(0.01)
            assert store.get("cue") == want
        assert store.get("strength") == 0.2


def test_cue_is_a_hotkey_not_a_property():
    assert dict(dreamcam_obs.HOTKEYS)["dreamcam.next_cue"] == "dreamcam: next cue"
    assert "cue" in dreamcam_obs.NOT_PROPERTIES
