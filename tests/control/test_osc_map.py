"""Controller mapping files: parsing, errors that name the entry, translation and feedback."""

from __future__ import annotations

import pytest
from dreamcam.errors import ConfigError
from dreamcam.control.osc.server import OscServer
from dreamcam.control.bindings import Action
from dreamcam.control.osc.maps import OscMapping, Rejected, osc_value
from dreamcam.knobs import ParamStore
from dreamcam.control.presets import PresetLibrary
from pythonosc.osc_message_builder import OscMessageBuilder

MAPPING = """\
[[bind]]
address = "/1/fader1"
param = "strength"
output = [0.2, 0.8]

[[bind]]
address = "/1/rotary1"
param = "seed"
input = [0, 127]
output = [0, 1000]

[[bind]]
address = "/1/fader2"
param = "guidance"          # whole range 0..20

[[bind]]
address = "/1/toggle1"
param = "bypass"

[[bind]]
address = "/1/push1"
preset = "ink"

[[bind]]
address = "/1/text1"
param = "prompt"
"""


def msg(address, *args):
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


@pytest.fixture
def mapping(tmp_path):
    path = tmp_path / "touchosc.toml"
    path.write_text(MAPPING)
    return OscMapping.load(path)


def translate(mapping, address, args):
    b = mapping.get(address)
    return b.translate(osc_value(b, args))


def test_translation(mapping):
    assert translate(mapping, "/1/fader1", [0.5]) == Action("set", "strength", pytest.approx(0.5))
    assert translate(mapping, "/1/fader1", [0]) == Action("set", "strength", pytest.approx(0.2))
    assert translate(mapping, "/1/rotary1", [127]) == Action("set", "seed", 1000)
    assert translate(mapping, "/1/rotary1", [64]) == Action("set", "seed", 504)
    assert translate(mapping, "/1/fader2", [0.25]) == Action("set", "guidance", 5.0)
    assert translate(mapping, "/1/toggle1", [1.0]) == Action("set", "bypass", True)
    assert translate(mapping, "/1/toggle1", [0.0]) == Action("set", "bypass", False)
    assert translate(mapping, "/1/push1", [1.0]) == Action("preset", "ink")
    assert translate(mapping, "/1/push1", [0.0]) is None  # the release of a push button
    assert translate(mapping, "/1/push1", []) == Action("preset", "ink")
    assert translate(mapping, "/1/text1", ["a fox"]) == Action("set", "prompt", "a fox")
    assert mapping.get("/2/unbound") is None


@pytest.mark.parametrize(
    "address, args, kind",
    [
        ("/1/fader1", [1.5], "out_of_range"),  # outside the input range: rejected, not clamped
        ("/1/fader1", [float("nan")], "not_finite"),
        ("/1/fader1", ["x"], "bad_args"),
        ("/1/fader1", [], "bad_args"),
        ("/1/text1", [1.0], "bad_args"),
    ],
)
def test_bad_values(mapping, address, args, kind):
    with pytest.raises(Rejected) as e:
        translate(mapping, address, args)
    assert e.value.kind == kind


def test_feedback_is_the_inverse(mapping):
    assert mapping.feedback("strength", 0.5) == [("/1/fader1", pytest.approx(0.5))]
    assert mapping.feedback("seed", 1000) == [("/1/rotary1", pytest.approx(127.0))]
    assert mapping.feedback("bypass", True) == [("/1/toggle1", 1.0)]
    assert mapping.feedback("delta", 1.0) == []


@pytest.mark.parametrize(
    "text, match",
    [
        ('[[bind]]\naddress = "/1/f"\nparam = "volume"\n', r"m.toml: line 3 \(/1/f\): unknown param 'volume'"),
        ('[[bind]]\naddress = "/dreamcam/strength"\nparam = "strength"\n', r"reserved|dreamcam answers itself"),
        ('[[bind]]\naddress = "fader"\nparam = "strength"\n', r"must be an OSC address"),
        ('[[bind]]\naddress = "/a"\n', r"exactly one of param"),
        ('[[bind]]\naddress = "/a"\nparam = "strength"\npreset = "x"\n', r"exactly one of param"),
        (
            '[[bind]]\naddress = "/a"\nparam = "strength"\noutput = [0, 2]\n',
            r"output \[0.0, 2.0\]: strength must be between",
        ),
        ('[[bind]]\naddress = "/a"\nparam = "strength"\ninput = [1, 1]\n', r"input range must not be empty"),
        ('[[bind]]\naddress = "/a"\nparam = "strength"\ninput = [0]\n', r"two finite numbers"),
        ('[[bind]]\naddress = "/a"\nparam = "prompt"\ninput = [0, 1]\n', r"prompt takes no input"),
        ('[[bind]]\naddress = "/a"\nparam = "strength"\nslope = "log"\n', r"line 4: unknown keys slope"),
        ('[[bind]]\naddress = "/a"\nparam = "strength"\ncurve = "cubic"\n', r'curve must be "linear", "exp", "log"'),
        ('[[bind]]\naddress = "/a"\nparam = "strength"\n[[bind]]\naddress = "/a"\nparam = "delta"\n', r"bound twice"),
        ('[[bind]\naddress = "/a"\n', r"line 1, column"),
        ('[fader]\naddress = "/a"\n', r"only \[\[bind\]\] entries"),
    ],
)
def test_bad_mapping_files(text, match):
    with pytest.raises(ConfigError, match=match):
        OscMapping.parse(text, "m.toml")


def test_missing_or_unreadable_mapping_file_is_one_plain_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        OscMapping.load(tmp_path / "nope.toml")
    assert str(info.value) == (f"cannot read controller map file {tmp_path / 'nope.toml'}: No such file or directory; "
                               "pass a TOML file to --map")  # said once, as --presets says it, no [Errno 2]
    (tmp_path / "latin1.toml").write_bytes(b'[[bind]]\naddress = "/caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 text; pass a TOML file to --map"):
        OscMapping.load(tmp_path / "latin1.toml")


def test_server_uses_the_mapping(mapping, tmp_path):
    presets_path = tmp_path / "presets.toml"
    presets_path.write_text('[ink]\nprompt = "an ink drawing"\n')
    store = ParamStore()
    srv = OscServer(store, port=0, mapping=mapping, presets=PresetLibrary(presets_path))
    me = ("127.0.0.1", 40000)
    srv.handle_datagram(msg("/1/fader1", 1.0), me)
    srv.handle_datagram(msg("/1/toggle1", 1.0), me)
    srv.handle_datagram(msg("/1/push1", 1.0), me)
    srv.handle_datagram(msg("/1/push1", 0.0), me)
    assert store.take_changes() == {
        "strength": pytest.approx(0.8),
        "bypass": True,
        "prompt": "an ink drawing",
        "preset": "ink",
    }
    srv.handle_datagram(msg("/1/fader1", 2.0), me)
    srv.handle_datagram(msg("/9/other", 1.0), me)
    assert srv.rejected["out_of_range"] == 1 and srv.rejected["unknown_address"] == 1
    assert store.take_changes() == {}


def test_preset_bindings_are_checked_against_the_presets_at_start(mapping, tmp_path, caplog):
    import logging

    with pytest.raises(ConfigError, match=r"touchosc.toml: line 20 \(/1/push1\): applies preset 'ink', but no presets file is given; add --presets"):
        OscServer(ParamStore(), port=0, mapping=mapping)
    presets_path = tmp_path / "presets.toml"
    presets_path.write_text('[watercolor]\nstrength = 0.4\n')
    with caplog.at_level(logging.WARNING, logger="dreamcam.control.osc.maps"):
        OscServer(ParamStore(), port=0, mapping=mapping, presets=PresetLibrary(presets_path))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'ink', which the presets file does not have (it has: watercolor)" in warnings[0]
