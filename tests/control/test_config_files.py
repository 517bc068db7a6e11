"""The presets and controller-map files as users write them: UTF-8 with a byte-order mark (as
Windows tools write it), `~` paths, and TOML nested deeper than Python can parse, at start and
while dreamcam runs (over a real loopback OSC socket)."""

from __future__ import annotations

import codecs
import json
import os
import socket

import pytest
from waiting import poll
from dreamcam.control.osc.maps import OscMapping
from dreamcam.control.osc.server import OscServer
from dreamcam.control.presets import PresetLibrary
from dreamcam.errors import ConfigError
from dreamcam.knobs import ParamStore
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

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


DEEP = "[" * 3000 + "]" * 3000  # tomllib recurses once per level: past Python's recursion limit


def _status(sock: socket.socket, port: int) -> dict | None:
    sock.sendto(OscMessageBuilder("/dreamcam/status").build().dgram, ("127.0.0.1", port))
    try:
        return json.loads(OscMessage(sock.recvfrom(65535)[0]).params[0])
    except TimeoutError:
        return None


def _rewrite(path, text: str) -> None:
    path.write_text(text)
    st = path.stat()  # a new stamp even where the clock is coarse
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_a_deeply_nested_presets_edit_keeps_the_last_good_presets_and_the_server_serving(tmp_path):
    # tomllib's RecursionError must not escape the reload: it would end the OSC thread, with no
    # more control and no status for the rest of the run
    path = tmp_path / "presets.toml"
    path.write_text('[calm]\nstrength = 0.3\n')
    lib = PresetLibrary(path, min_interval=0.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    with OscServer(ParamStore(), port=0, presets=lib) as server:
        assert _status(sock, server.port)["presets"] == ["calm"]
        _rewrite(path, f"[calm]\nstrength = {DEEP}\n")
        # the server looks every 0.2 s and reads a change once it has settled for 0.2 s: wait for
        # the read (a fixed 0.6 s sleep left 0.2 s of margin on a loaded machine)
        poll(lambda: lib.errors > 0, timeout_s=5.0, interval_s=0.05)
        st = _status(sock, server.port)
        assert st is not None, "the OSC server stopped answering"
        assert st["presets"] == ["calm"] and lib.errors == 1

        def shown(key: str):  # None once the server stops answering
            return (_status(sock, server.port) or {}).get(key)

        _rewrite(path, '[calm]\nstrength = 0.3\n\n[wild]\nstrength = 0.9\n')
        assert poll(lambda: shown("presets") == ["calm", "wild"], 3.0, 0.1), _status(sock, server.port)
        sock.sendto(_preset_msg("wild"), ("127.0.0.1", server.port))
        assert poll(lambda: shown("strength") == 0.9, 3.0, 0.05), _status(sock, server.port)
    sock.close()


def _preset_msg(name: str) -> bytes:
    b = OscMessageBuilder("/dreamcam/preset")
    b.add_arg(name)
    return b.build().dgram


@pytest.mark.parametrize("kind", ["presets", "mapping"])
def test_deep_nesting_at_start_is_one_config_error(tmp_path, kind):
    path = tmp_path / "f.toml"
    if kind == "presets":
        path.write_text(f"[calm]\nstrength = {DEEP}\n")
        with pytest.raises(ConfigError, match="nested too deep") as e:
            PresetLibrary(path)
    else:
        path.write_text(f'[[bind]]\naddress = "/1/fader1"\nparam = "strength"\ninput = {DEEP}\n')
        with pytest.raises(ConfigError, match="nested too deep") as e:
            OscMapping.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
