"""`dreamcam run --midi/--learn/--map` mistakes (one line, exit 2, before the model loads),
`--osc-map` still naming the map, and `dreamcam devices` listing MIDI ports. This machine has no
MIDI device and no ALSA sequencer (/dev/snd/seq): the "no MIDI" cases are that real absence."""

from __future__ import annotations

import os

import pytest
from dreamcam.cli import devices
from dreamcam.cli import main as cli
from dreamcam.control.midi import ports

BASE = ["run", "--model", "tiny", "--width", "64", "--height", "64", "--source", "testpattern", "--sink", "null", "--frames", "1", "--no-osc"]


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main([*BASE, *args])
    return code, capsys.readouterr().err


def no_midi_here() -> bool:
    return not any(s.inputs for s in ports.list_ports())


@pytest.mark.parametrize(
    "args, says",
    [
        (["--learn"], "--learn binds MIDI controls: add --midi auto"),
        (["--learn", "--midi", "auto"], "--learn writes what it learns to a map file: add --map FILE"),
        (["--learn", "--midi", "auto", "--map", "/no/such/folder/m.toml"], "--map /no/such/folder/m.toml: folder /no/such/folder does not exist"),
        (["--midi", "auto", "--map", "/no/such.toml"], "cannot read controller map file /no/such.toml"),
    ],
)
def test_midi_flag_mistakes_are_one_line(capsys, args, says):
    code, err = run_cli(capsys, *args)
    assert code == 2 and says in err and "loading model" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(not no_midi_here(), reason="this machine has MIDI inputs")
def test_midi_without_a_midi_system_says_why_in_one_line(capsys):
    code, err = run_cli(capsys, "--midi", "auto")
    assert code == 2 and "loading model" not in err, err
    assert err.startswith("dreamcam: error: --midi auto: ") and "dreamcam devices" in err
    assert len(err.strip().splitlines()) == 1 and "ALSA lib" not in err  # the C library's own lines are silenced
    if not os.path.exists("/dev/snd/seq"):
        assert "sudo modprobe snd-seq" in err


def test_osc_map_is_another_name_for_map(tmp_path):
    path = tmp_path / "m.toml"
    for flag in ("--map", "--osc-map"):
        args = cli.build_parser("run").parse_args(["run", flag, str(path)])
        assert args.map == str(path)


def test_pick_a_port_by_index_name_or_part():
    names = ["Midi Through:Midi Through Port-0 14:0", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", "LPD8:LPD8 MIDI 1 24:0"]
    assert ports.pick(names, "auto") == names[0]
    assert ports.pick(names, "1") == names[1]
    assert ports.pick(names, "nanokontrol") == names[1]
    assert ports.pick(names, names[2]) == names[2]
    with pytest.raises(Exception, match=r"--midi MIDI: 3 MIDI inputs match"):
        ports.pick(names, "MIDI")
    with pytest.raises(Exception, match=r"--midi 5: there are 3 MIDI inputs \(0: Midi Through"):
        ports.pick(names, "5")
    with pytest.raises(Exception, match=r"--midi apc: no MIDI input has that name; there are: 0: Midi"):
        ports.pick(names, "apc")
    with pytest.raises(Exception, match=r"no MIDI inputs here \(plug the controller in"):
        ports.pick([], "auto")


@pytest.mark.parametrize(
    "inp, outputs, want",
    [
        ("nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", ["Midi Through 14:0", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"], 1),
        ("nanoKONTROL2 1", ["Microsoft GS Wavetable Synth 0", "nanoKONTROL2 2"], 1),  # Windows numbers each port
        ("LPD8 In", ["LPD8 Out"], 0),
        ("dev:dev", ["dev-01:dev"], 0),  # JACK: a second client of the same name
        ("LPD8", ["nanoKONTROL2"], None),
    ],
)
def test_the_devices_own_output_is_found_for_feedback(inp, outputs, want):
    assert ports.matching_output(inp, outputs) == (outputs[want] if want is not None else None)


def test_devices_lists_midi_ports_or_says_why_not(capsys):
    systems = devices.find_midi()
    text = "\n".join(devices.format_midi(systems))
    assert text.startswith("MIDI controllers:")
    if no_midi_here():
        assert "  none" in text
    text = "\n".join(devices.format_midi([{"api": None, "inputs": ["nanoKONTROL2 1"], "outputs": ["nanoKONTROL2 2"],
                                           "error": None}]))
    assert "  input 0: nanoKONTROL2 1   --midi 0" in text and "  output: nanoKONTROL2 2   (feedback)" in text
    assert "none" in "\n".join(devices.format_midi([{"api": None, "inputs": [], "outputs": [], "error": None}]))
