"""MIDI bindings in the controller map: parsing, one-line errors naming the line, curves and
their inverse, 14-bit pairs and channels, TOML written back by learn (`save_binding`)."""

from __future__ import annotations

import os

import pytest
from dreamcam.control.bindings import Action, Binding, MidiControl
from dreamcam.control.map_file import binding_toml, save_binding
from dreamcam.control.maps import ControllerMap
from dreamcam.control.midi.learn import make_binding, parse_target
from dreamcam.errors import ConfigError

MAP = """\
# my controller
[[bind]]
cc = 7
param = "strength"
output = [0.2, 0.8]
curve = 3            # very fine at the bottom

# the pads
[[bind]]
note = 36
channel = 10
preset = "ink"

[[bind]]
cc14 = 0
param = "seed"
output = [0, 1000]

[[bind]]
note = 40
param = "bypass"
mode = "momentary"

[[bind]]
address = "/1/push"
action = "/dreamcam/seed"
args = [7]
"""


@pytest.fixture
def m():
    return ControllerMap.parse(MAP, "c.toml")


def test_midi_bindings_and_their_actions(m):
    b = m.find_midi("cc", 7, 3)  # any channel
    assert b.translate(127) == Action("set", "strength", pytest.approx(0.8))
    assert b.translate(0) == Action("set", "strength", pytest.approx(0.2))
    assert b.translate(64).value == pytest.approx(0.2 + 0.6 * (64 / 127) ** 3)
    assert m.find_midi("note", 36, 1) is None  # only channel 10
    assert m.find_midi("note", 36, 10).translate(127) == Action("preset", "ink")
    assert m.find_midi("note", 36, 10).translate(0) is None  # the release
    assert m.find_midi("cc14", 0, 1).translate(16383) == Action("set", "seed", 1000)
    assert m.find_midi("note", 40, 1).translate(127) == Action("set", "bypass", True)
    assert m.find_midi("note", 40, 1).translate(0) == Action("set", "bypass", False)
    assert m.get("/1/push").translate(None) == Action("send", "/dreamcam/seed", args=(7,))
    assert [b.line for b in m.all()] == [24, 2, 9, 14, 19]  # OSC bindings first, each with its line


@pytest.mark.parametrize("value", [0.2, 0.35, 0.5, 0.8])
def test_feedback_inverts_range_and_curve(m, value):
    b = m.find_midi("cc", 7, 1)
    assert b.translate(b.feedback("strength", value)).value == pytest.approx(value)


def test_feedback_of_presets_and_switches(m):
    assert m.find_midi("note", 36, 10).feedback("preset", "ink") == 127.0
    assert m.find_midi("note", 36, 10).feedback("preset", "other") == 0.0
    assert m.find_midi("note", 40, 1).feedback("bypass", True) == 127.0
    assert m.find_midi("cc", 7, 1).feedback("guidance", 1.0) is None


@pytest.mark.parametrize(
    "text, match",
    [
        ('[[bind]]\ncc = 128\nparam = "strength"\n', r"c.toml: line 2: cc must be a whole number 0..127, got 128"),
        ('[[bind]]\ncc14 = 40\nparam = "strength"\n', r"cc14 must be a whole number 0..31.*cc n\+32"),
        ('[[bind]]\ncc = 1\nchannel = 0\nparam = "strength"\n', r"channel must be 1..16"),
        ('[[bind]]\ncc = 1\nnote = 2\nparam = "strength"\n', r"exactly one control.*got cc, note"),
        ('\n\n[[bind]]\nnote = 3\nparam = "strength"\n', r"line 5 \(note 3\): strength takes a range: bind it to a knob"),
        ('[[bind]]\ncc = 1\nparam = "prompt"\n', r"prompt is text, which a MIDI control cannot send"),
        ('[[bind]]\ncc14 = 1\nparam = "bypass"\n', r"bypass is on/off: bind it to a cc or a note"),
        ('[[bind]]\ncc14 = 1\npreset = "x"\n', r"a preset binding fires on a press"),
        ('[[bind]]\ncc = 1\nparam = "bypass"\nmode = "latch"\n', r'mode must be "toggle".*"momentary"'),
        ('[[bind]]\ncc = 1\nparam = "strength"\nmode = "toggle"\n', r"mode is for on/off knobs"),
        ('[[bind]]\ncc = 1\nparam = "strength"\ninput = [0, 200]\n', r"input must lie in 0..127"),
        ('[[bind]]\ncc = 1\nparam = "strength"\ncurve = 0\n', r"curve must be"),
        ('[[bind]]\naddress = "/a"\nchannel = 1\nparam = "strength"\n', r"channel is for MIDI controls"),
        ('[[bind]]\ncc = 1\naction = "/other/x"\n', r"action must be an address of dreamcam"),
        ('[[bind]]\ncc = 1\naction = "/dreamcam/cue"\nargs = "next"\n', r"args must be a list"),
        ('[[bind]]\ncc = 1\npreset = "x"\nargs = [1]\n', r"args go with action"),
        ('[[bind]]\ncc = 1\nparam = "strength"\n\n[[bind]]\ncc = 1\nparam = "delta"\n', r"line 5 \(cc 1\): cc 1 is bound twice"),
        ('[[bind]]\ncc14 = 1\nparam = "strength"\n\n[[bind]]\ncc = 33\nparam = "delta"\n', r"cc 33 overlaps cc14 1"),
        ('[[bind]]\ncc = 1\nchannel = 2\nparam = "strength"\n[[bind]]\ncc = 1\nchannel = 2\nparam = "delta"\n', r"bound twice"),
    ],
)
def test_bad_midi_bindings_are_one_line_naming_the_line(text, match):
    with pytest.raises(ConfigError, match=match) as e:
        ControllerMap.parse(text, "c.toml")
    assert "\n" not in str(e.value)


def test_a_control_on_one_channel_and_on_any_may_both_be_bound():
    m = ControllerMap.parse('[[bind]]\ncc = 1\nparam = "strength"\n\n[[bind]]\ncc = 1\nchannel = 2\nparam = "delta"\n')
    assert m.find_midi("cc", 1, 2).param == "delta" and m.find_midi("cc", 1, 3).param == "strength"


def test_unknown_actions_are_refused_against_the_addresses_dreamcam_answers():
    m = ControllerMap.parse('[[bind]]\nnote = 1\naction = "/dreamcam/nothing"\n', "c.toml")
    with pytest.raises(ConfigError, match=r"c.toml: line 1 \(note 1\): action /dreamcam/nothing is not an address"):
        m.check_actions(["/dreamcam/strength"])


def test_every_binding_writes_toml_that_loads_back_the_same(m):
    for b in m.all():
        again = ControllerMap.parse(binding_toml(b)).all()
        assert again == [b], binding_toml(b)
    assert binding_toml(m.find_midi("cc", 7, 1)) == '[[bind]]\ncc = 7\nparam = "strength"\noutput = [0.2, 0.8]\ncurve = 3\n'


def test_save_binding_keeps_comments_replaces_one_table_and_appends(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(MAP)
    os.chmod(path, 0o640)
    save_binding(path, Binding(midi=MidiControl("note", 36, 10), param="bypass", input=(0.0, 127.0), mode="toggle"))
    text = path.read_text()
    assert text == MAP.replace('note = 36\nchannel = 10\npreset = "ink"\n', 'note = 36\nchannel = 10\nparam = "bypass"\n')
    assert "# the pads\n[[bind]]\nnote = 36" in text  # the comment above the table stays with it
    new = Binding(midi=MidiControl("cc", 20, 1), param="delta", input=(0.0, 127.0), output=(0.0, 5.0))
    written = save_binding(path, new)
    assert path.read_text() == text + '\n[[bind]]\ncc = 20\nchannel = 1\nparam = "delta"\n'
    assert written.find_midi("cc", 20, 1) == new
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert sorted(os.listdir(tmp_path)) == ["c.toml"]  # no temporary file left


def test_save_binding_replacing_a_pair_with_a_plain_cc(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(MAP)
    save_binding(path, Binding(midi=MidiControl("cc", 32), param="delta", input=(0.0, 127.0), output=(0.0, 5.0)))
    m = ControllerMap.load(path)
    assert m.find_midi("cc14", 0, 1) is None and m.find_midi("cc", 32, 1).param == "delta"


def test_save_binding_makes_a_missing_file_and_refuses_a_broken_one(tmp_path):
    path = tmp_path / "new.toml"
    save_binding(path, Binding(midi=MidiControl("note", 1), preset="ink", input=(0.0, 127.0)))
    assert path.read_text() == '[[bind]]\nnote = 1\npreset = "ink"\n'
    path.write_text('[[bind]]\nnote = 1\npreset = "ink"\n[[bind]\n')
    with pytest.raises(ConfigError, match=r"new.toml: line 4, column .*fix the TOML syntax there"):
        save_binding(path, Binding(midi=MidiControl("note", 2), preset="ink", input=(0.0, 127.0)))
    assert path.read_text().endswith("[[bind]\n")
    path.write_text('bind = [{note = 1, preset = "ink"}]\n')
    with pytest.raises(ConfigError, match=r"write its bindings as \[\[bind\]\] tables"):
        save_binding(path, Binding(midi=MidiControl("note", 2), preset="ink", input=(0.0, 127.0)))


@pytest.mark.parametrize(
    "text, want",
    [
        ("strength", {"param": "strength"}),
        ("  bypass\n", {"param": "bypass"}),
        ("preset neon city", {"preset": "neon city"}),
        ("/dreamcam/cue next", {"action": "/dreamcam/cue", "args": ["next"]}),
        ("/dreamcam/seed 7", {"action": "/dreamcam/seed", "args": [7]}),
        ("off", None),
        ("", None),
    ],
)
def test_learn_targets(text, want):
    assert parse_target(text) == want


@pytest.mark.parametrize("text", ["prompt", "volume", "preset"])
def test_learn_targets_refused(text):
    with pytest.raises(ConfigError, match="cannot learn"):
        parse_target(text)


def test_learned_bindings():
    pair = MidiControl("cc14", 3, 2)
    assert binding_toml(make_binding(pair, {"param": "seed"})) == '[[bind]]\ncc14 = 3\nchannel = 2\nparam = "seed"\n'
    # a pair cannot switch: its high half is bound
    assert binding_toml(make_binding(pair, {"param": "bypass"})) == '[[bind]]\ncc = 3\nchannel = 2\nparam = "bypass"\nmode = "toggle"\n'
    assert binding_toml(make_binding(MidiControl("note", 9, 1), {"param": "bypass"})) == '[[bind]]\nnote = 9\nchannel = 1\nparam = "bypass"\n'
    with pytest.raises(ConfigError, match="is a key or pad; guidance takes a range"):
        make_binding(MidiControl("note", 9, 1), {"param": "guidance"})
