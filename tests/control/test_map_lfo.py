"""LFOs declared in the controller map file (`lfo = "..."` at its top): checked at load with the
line named, set on the `lfo` knob by `dreamcam run --map` (the command line's --lfo wins), set
again when an edit of the file changes it while running, and kept when MIDI learn rewrites the
file. Real files, a real `dreamcam run` process (tiny model, test pattern) over real UDP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from dreamcam.cli import main as cli
from dreamcam.cli.run_options import live_control
from dreamcam.control.bindings import MidiControl
from dreamcam.control.map_file import MapReloader, save_binding
from dreamcam.control.maps import ControllerMap
from dreamcam.control.midi.learn import make_binding
from dreamcam.control.osc.dispatch import OscDispatcher
from dreamcam.errors import ConfigError
from dreamcam.knobs import ParamStore
from waiting import wait_until

LFO = "strength sine 4 0.1; guidance triangle 8 0.5"
MAP = f'# my controller\nlfo = "{LFO}"\n\n[[bind]]\ncc = 7\nparam = "strength"\n'
PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")
HOST = "127.0.0.1"


def test_the_key_loads_and_a_map_without_it_has_none():
    assert ControllerMap.parse(MAP, "m.toml").lfo == LFO
    assert ControllerMap.parse('lfo = ""\n', "m.toml").lfo == ""  # "" stops them all: a value
    assert ControllerMap.parse('[[bind]]\ncc = 7\nparam = "strength"\n', "m.toml").lfo is None


@pytest.mark.parametrize(
    "line, says",
    [
        ('lfo = "strength sine 4"', "m.toml: line 3: lfo 'strength sine 4': write KNOB SHAPE BEATS DEPTH"),
        ('lfo = "prompt sine 4 0.1"', "m.toml: line 3: lfo 'prompt sine 4 0.1': 'prompt' cannot follow an LFO"),
        ('lfo = "strength square 4 0.1"', "m.toml: line 3: lfo 'strength square 4 0.1': shape must be one of"),
        ("lfo = 4", 'm.toml: line 3: lfo must be text like "strength sine 4 0.1", got 4'),
    ],
)
def test_a_bad_value_is_refused_naming_its_line(line, says):
    with pytest.raises(ConfigError) as e:
        ControllerMap.parse(f"# header\n\n{line}\n[[bind]]\ncc = 7\nparam = \"strength\"\n", "m.toml")
    assert str(e.value).startswith(says) and "\n" not in str(e.value)


def test_other_top_level_keys_are_still_refused():
    with pytest.raises(ConfigError, match=r'expected only \[\[bind\]\] entries and lfo = "\.\.\.", got tempo'):
        ControllerMap.parse("tempo = 120\n", "m.toml")


def run_args(*extra: str):
    return cli.build_parser("run").parse_args(["run", "--model", "tiny", "--source", "testpattern", "--sink", "null", *extra])


def test_run_sets_the_knob_from_the_map_and_lfo_on_the_command_line_wins(tmp_path):
    path = tmp_path / "controller.toml"
    path.write_text(MAP, encoding="utf-8")
    store, _, mapping = live_control(run_args("--map", str(path)))
    assert mapping.lfo == LFO and store.get("lfo") == LFO
    assert store.take_changes() == {}  # the engine starts with it, as with any flag
    store, _, _ = live_control(run_args("--map", str(path), "--lfo", "delta saw 2 0.2"))
    assert store.get("lfo") == "delta saw 2 0.2"
    store, _, _ = live_control(run_args("--map", str(path), "--lfo", ""))  # --lfo "" stops the map's too
    assert store.get("lfo") == ""


def test_a_bad_map_lfo_stops_run_before_anything_opens(tmp_path, capsys):
    path = tmp_path / "controller.toml"
    path.write_text('lfo = "strength sine 0 0.1"\n', encoding="utf-8")
    rc = cli.main(["run", "--model", "tiny", "--source", "testpattern", "--sink", "null", "--frames", "1",
                   "--no-osc", "--map", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and f"{path}: line 1: lfo 'strength sine 0 0.1': BEATS must be above 0" in err


def test_learn_keeps_the_key_when_it_rewrites_the_file(tmp_path):
    path = tmp_path / "controller.toml"
    path.write_text(MAP, encoding="utf-8")
    written = save_binding(path, make_binding(MidiControl("cc", 8), {"param": "guidance"}))  # as learn does
    text = path.read_text(encoding="utf-8")
    assert text.startswith(f'# my controller\nlfo = "{LFO}"\n') and 'cc = 8\nparam = "guidance"' in text
    assert written.lfo == LFO and ControllerMap.load(path).lfo == LFO


def reload(reloader: MapReloader, path: Path, text: str) -> bool:
    path.write_text(text, encoding="utf-8")
    reloader.poll(now=0.0)  # seen changed, then read once it has settled
    return reloader.poll(now=10.0)


def test_an_edit_that_changes_the_key_sets_the_knob_and_one_that_keeps_it_does_not(tmp_path):
    path = tmp_path / "controller.toml"
    path.write_text(MAP, encoding="utf-8")
    store = ParamStore()
    mapping = ControllerMap.load(path)
    dispatcher = OscDispatcher(store, mapping=mapping)
    store.set("lfo", "delta sine 2 0.3")  # set over OSC (or --lfo) after the start
    reloader = MapReloader(path, dispatcher.replace_map)
    assert reload(reloader, path, MAP + '\n[[bind]]\ncc = 9\nparam = "delta"\n')  # learn's rewrite: key as it was
    assert store.get("lfo") == "delta sine 2 0.3"
    assert reload(reloader, path, MAP.replace(LFO, "guidance saw 16 1"))
    assert store.get("lfo") == "guidance saw 16 1"
    assert not reload(reloader, path, MAP.replace(LFO, "guidance saw 16"))  # a typo: refused, the knob stays
    assert store.get("lfo") == "guidance saw 16 1" and reloader.refused == 1
    assert reload(reloader, path, '[[bind]]\ncc = 7\nparam = "strength"\n')  # the key dropped: the knob stays
    assert store.get("lfo") == "guidance saw 16 1"


def test_dreamcam_run_takes_the_maps_lfo_and_an_edit_of_it(tmp_path):
    path = tmp_path / "controller.toml"
    path.write_text(MAP, encoding="utf-8")
    cmd = [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--device", "cpu", "--width", "64", "--height",
           "64", "--source", "testpattern", "--sink", "null", "--osc-port", "0", "--map", str(path)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(5)
    try:
        wait_until(lambda: any("OSC on" in ln for ln in lines), timeout_s=60, what="OSC to listen")
        port = int(re.search(r"OSC on 127\.0\.0\.1:(\d+)", "".join(lines))[1])

        def lfo() -> str:
            sock.sendto(OscMessageBuilder("/dreamcam/status").build().dgram, (HOST, port))
            return json.loads(OscMessage(sock.recvfrom(65535)[0]).params[0])["lfo"]

        assert lfo() == LFO
        path.write_text(MAP.replace(LFO, "delta triangle 2 0.25"), encoding="utf-8")
        wait_until(lambda: lfo() == "delta triangle 2 0.25", timeout_s=60, what="the edited lfo in status")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            proc.kill()
            sock.close()
    assert "Traceback" not in "".join(lines), "".join(lines)
