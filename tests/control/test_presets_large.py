"""Large presets files: parsing is linear (3,000 presets in well under a second; before: 34.9 s),
a file of unbounded size is one clear error, and a slow reload does not hold up OSC."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest
from dreamcam.control.osc.server import OscServer
from dreamcam.control.presets import MAX_FILE_BYTES, PresetLibrary, parse_presets
from dreamcam.errors import ConfigError
from dreamcam.knobs import ParamStore
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder


def many(n: int) -> str:
    return "".join(f'["preset {i} ' + "x" * 200 + f'"]\nprompt = "a painting {i}"\nstrength = 0.5\nseed = {i}\n\n'
                   for i in range(n))


def test_3000_presets_parse_in_linear_time():
    text = many(3000)
    t0 = time.perf_counter()
    presets = parse_presets(text)
    assert len(presets) == 3000 and time.perf_counter() - t0 < 2.0


def test_an_error_still_names_the_line_in_a_large_file():
    text = many(2000) + '["last"]\nseed = 1\nstrength = 9\n'
    with pytest.raises(ConfigError, match=r"line %d: preset 'last'" % (text.count("\n"))):
        parse_presets(text, "p.toml")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero (Linux, macOS)")
def test_an_endless_presets_file_is_one_clear_error():
    with pytest.raises(ConfigError, match="larger than 4 MiB") as e:
        PresetLibrary("/dev/zero")
    assert "\n" not in str(e.value) and MAX_FILE_BYTES == 4 * 1024 * 1024


def test_a_grown_file_keeps_the_last_good_presets(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text('[a]\nseed = 1\n')
    lib = PresetLibrary(path, min_interval=0, settle=0)
    path.write_text('[a]\nseed = 1\n' + "#" * MAX_FILE_BYTES + "\n")
    assert not lib.maybe_reload(force=True) and lib.names() == ["a"] and lib.errors == 1


class SlowLibrary(PresetLibrary):
    """A presets library whose reload takes 2 s, as a huge file would (the slowness is simulated)."""

    def maybe_reload(self, *, force: bool = False) -> bool:
        self.reloading.set()
        time.sleep(2.0)
        return False


def test_status_is_answered_while_presets_reload(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text('[a]\nseed = 1\n')
    lib = SlowLibrary(path)
    lib.reloading = threading.Event()
    with OscServer(ParamStore(), port=0, presets=lib) as srv, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert lib.reloading.wait(5)
        sock.settimeout(1.0)
        t0 = time.perf_counter()
        sock.sendto(OscMessageBuilder("/dreamcam/status").build().dgram, ("127.0.0.1", srv.port))
        state = json.loads(OscMessage(sock.recvfrom(65536)[0]).params[0])
        assert state["presets"] == ["a"] and time.perf_counter() - t0 < 0.5
