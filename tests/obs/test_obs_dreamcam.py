"""A real headless OBS with the dreamcam script, talking to dreamcam's own OSC server."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from obs_harness import OBS_MARKS, ObsStudio

from dreamcam.control.osc.server import OscServer
from dreamcam.knobs import ParamStore
from dreamcam.control.presets import PresetLibrary
from waiting import wait_until as _wait_until

pytestmark = OBS_MARKS

SCRIPT = Path(__file__).resolve().parents[2] / "obs_scripts" / "dreamcam_obs.py"
PRESETS = """
[calm]
prompt = "a calm lake at dawn"
strength = 0.3

[storm]
prompt = "a storm over the sea"
strength = 0.7
seed = 99
"""

wait_until = partial(_wait_until, timeout_s=20.0)  # OBS takes its time to start and react


def test_obs_script_steers_dreamcam_and_hotkey_switches_preset(tmp_path):
    presets_file = tmp_path / "presets.toml"
    presets_file.write_text(PRESETS)
    store = ParamStore()
    status = {"fps": 24.8, "latency_ms": 41.0, "dropped": 0}
    settings = {"host": "127.0.0.1", "prompt": "an oil painting of a harbour", "strength": 0.55, "seed": 1234,
                "guidance": 1.5, "transition": 0.0, "dreamcam.next_preset": [{"key": "OBS_KEY_F13"}]}
    with OscServer(store, port=0, status=lambda: status, presets=PresetLibrary(str(presets_file))) as server:
        with ObsStudio(scripts=[(SCRIPT, dict(settings, port=server.port))]) as studio:
            # 1. the script's settings from the scene collection change dreamcam's state
            wait_until(lambda: store.get("prompt") == settings["prompt"], what="prompt from OBS")
            wait_until(lambda: abs(store.get("strength") - 0.55) < 1e-6 and store.get("seed") == 1234,
                       what="strength and seed from OBS")
            # 2. the status reply (dreamcam's real JSON) reaches the script's status line
            studio.wait_for_log(r"status: connected: 24\.8 fps, 41 ms")
            # 3. a hotkey pressed through obs-websocket switches dreamcam's preset
            studio.trigger_hotkey("dreamcam.next_preset")
            wait_until(lambda: store.get("preset") in ("calm", "storm"), what="a preset from the hotkey")
            first = store.get("preset")
            assert store.get("prompt") == {"calm": "a calm lake at dawn", "storm": "a storm over the sea"}[first]
            studio.trigger_hotkey("dreamcam.next_preset")
            wait_until(lambda: store.get("preset") not in ("", first), what="the next preset")
    assert sum(server.rejected.values()) == 0, dict(server.rejected)


def test_obs_cue_hotkeys_step_dreamcams_cue_list(tmp_path):
    presets_file = tmp_path / "show.toml"
    presets_file.write_text('cues = ["storm", "calm"]\n' + PRESETS)
    store = ParamStore()
    settings = {"host": "127.0.0.1"}
    with OscServer(store, port=0, presets=PresetLibrary(str(presets_file))) as server:
        with ObsStudio(scripts=[(SCRIPT, dict(settings, port=server.port))]) as studio:
            studio.trigger_hotkey("dreamcam.next_cue")
            wait_until(lambda: store.get("cue") == "storm", what="the first cue from the hotkey")
            assert store.get("prompt") == "a storm over the sea" and store.get("seed") == 99
            studio.trigger_hotkey("dreamcam.next_cue")
            wait_until(lambda: store.get("cue") == "calm", what="the next cue")
            studio.trigger_hotkey("dreamcam.previous_cue")
            wait_until(lambda: store.get("cue") == "storm", what="the previous cue")
            assert "Traceback" not in studio.log_text()
    assert sum(server.rejected.values()) == 0, dict(server.rejected)
