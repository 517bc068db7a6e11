"""A real OBS Studio, headless: the dreamcam script loaded from a scene collection, and a
Media Source showing an MPEG-TS stream over UDP.

Here `OscPeer` (python-osc's real UDP server) and `UdpMpegTsSender` (PyAV) on 127.0.0.1 check
the script's protocol and the harness on their own; `test_obs_dreamcam.py` and
`test_obs_file_stream.py` put dreamcam's own OSC server and UDP sink in their place.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from obs_harness import OBS_MARKS, ObsStudio, OscPeer, UdpMpegTsSender, free_port

pytestmark = OBS_MARKS

SCRIPT = Path(__file__).resolve().parents[2] / "obs_scripts" / "dreamcam_obs.py"
PROMPT = "ネオンの街、café at night 🌃"
SETTINGS = {"host": "127.0.0.1", "prompt": PROMPT, "negative_prompt": "blurry", "strength": 0.65,
            "guidance": 2.5, "delta": 0.8, "seed": 424242, "transition": 1.5, "bypass": True}
STATE = {"prompt": "", "preset": "calm", "presets": ["calm", "storm", "neon"], "fps": 24.83,
         "latency_ms": 41.2, "dropped": 0, "bypass": False}


# Loaded after dreamcam_obs.py in the same OBS: once the status reply has filled the presets,
# it builds dreamcam_obs's properties with OBS's real API and saves its settings (hotkey
# bindings included), and logs what it finds. OBS only builds properties when its Scripts
# dialog opens, which no obs-websocket request can do.
PROBE = """
import json
import obspython as obs
import dreamcam_obs

def _probe():
    if dreamcam_obs._link is None or not dreamcam_obs._link.presets:
        return
    obs.timer_remove(_probe)
    props = dreamcam_obs.script_properties()
    dreamcam_obs._on_refresh(props, None)
    found = {}
    for name in ("host", "port", "prompt", "negative_prompt", "strength", "guidance", "delta", "seed",
                 "transition", "preset", "bypass", "status", "refresh"):
        prop = obs.obs_properties_get(props, name)
        found[name] = None if prop is None else obs.obs_property_get_type(prop)
    preset = obs.obs_properties_get(props, "preset")
    found["preset_items"] = [obs.obs_property_list_item_string(preset, i)
                             for i in range(obs.obs_property_list_item_count(preset))]
    obs.obs_properties_destroy(props)
    data = obs.obs_data_create()
    dreamcam_obs.script_save(data)
    found["saved"] = json.loads(obs.obs_data_get_json(data))
    obs.obs_data_release(data)
    obs.script_log(obs.LOG_INFO, "probe: " + json.dumps(found))

def script_load(settings):
    obs.timer_add(_probe, 200)
"""


def test_script_sends_its_settings_answers_status_and_hotkeys_switch_preset(tmp_path):
    probe = tmp_path / "dreamcam_probe.py"
    probe.write_text(PROBE)
    binding = [{"key": "OBS_KEY_F13"}]
    settings = dict(SETTINGS, **{"dreamcam.next_preset": binding})
    with OscPeer(state=STATE) as peer, \
            ObsStudio(scripts=[(SCRIPT, dict(settings, port=peer.port)), (probe, {})]) as studio:
        studio.wait_for_log(r"Loaded python script: dreamcam_obs\.py")

        # 1. Settings from the scene collection reach dreamcam, with OSC types per design.md.
        assert peer.wait_for("/dreamcam/prompt") == [PROMPT]
        assert peer.wait_for("/dreamcam/negative_prompt") == ["blurry"]
        for name in ("strength", "guidance", "delta", "transition"):
            (value,) = peer.wait_for(f"/dreamcam/{name}")
            assert isinstance(value, float) and value == pytest.approx(SETTINGS[name], rel=1e-6), name
        assert peer.wait_for("/dreamcam/seed") == [424242]
        assert peer.wait_for("/dreamcam/bypass") == [1]

        # 2. Status polling: the reply turns into the status line (logged on change).
        peer.wait_for("/dreamcam/status")
        studio.wait_for_log(r"status: connected: 24\.8 fps, 41 ms")

        # 3. The properties OBS shows, the preset list from the reply, hotkey bindings kept.
        found = json.loads(studio.wait_for_log(r"probe: (.*)").group(1))
        assert None not in found.values(), found
        assert found["preset_items"] == ["", "calm", "storm", "neon"]
        assert found["saved"]["dreamcam.next_preset"] == binding
        assert found["saved"]["dreamcam.previous_preset"] == []

        # 4. Hotkeys through obs-websocket: presets come from the status reply.
        assert {"dreamcam.next_preset", "dreamcam.previous_preset", "dreamcam.toggle_bypass"} <= set(
            studio.hotkey_names())
        studio.trigger_hotkey("dreamcam.next_preset")
        assert peer.wait_for("/dreamcam/preset") == ["storm"]
        studio.trigger_hotkey("dreamcam.previous_preset")
        peer.wait_for("/dreamcam/preset", lambda a: a == ["calm"])
        studio.trigger_hotkey("dreamcam.toggle_bypass")
        peer.wait_for("/dreamcam/bypass", lambda a: a == [0])
        assert peer.state["preset"] == "calm" and peer.state["bypass"] is False

        # 5. dreamcam goes away: the status line says so.
        peer.close()
        studio.wait_for_log(rf"status: no answer from dreamcam at 127\.0\.0\.1:{peer.port}")
        assert "Traceback" not in studio.log_text()
        pgid, root = studio._proc.pid, studio.root

    # The harness ended OBS's whole process group and removed its folder.
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert not root.exists()


def test_media_source_shows_a_udp_mpegts_stream():
    left, right = (200, 40, 50), (40, 70, 210)
    image = np.zeros((240, 320, 3), np.uint8)
    image[:, :160], image[:, 160:] = left, right
    port = free_port(socket.SOCK_DGRAM)
    with ObsStudio() as studio, UdpMpegTsSender(port, image) as sender:
        frame = studio.media_source_screenshot(port, timeout_s=20)
        assert sender.error is None and sender.datagrams > 0
        assert frame.shape == (240, 320, 3)
        # Centre regions away from the edge, where chroma subsampling blends the halves.
        got_left = frame[40:200, 20:140].reshape(-1, 3).mean(0)
        got_right = frame[40:200, 180:300].reshape(-1, 3).mean(0)
        np.testing.assert_allclose(got_left, left, atol=30)
        np.testing.assert_allclose(got_right, right, atol=30)
