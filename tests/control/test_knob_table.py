"""The knob table itself and what derives from it: every knob set over real UDP shows in the
/dreamcam/status reply, the engine has every setter the table names, preset keys are the
presettable knobs, and the controller fences only for knobs that write to the engine."""

from __future__ import annotations

import json
import socket

import pytest
from dreamcam import StreamEngine
from dreamcam.control.controller import Controller
from dreamcam.control.osc.server import OscServer
from dreamcam.control.presets import PresetLibrary, parse_presets
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS, Apply, KnobError, ParamStore, describe, preset_keys
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

# a valid value other than the default, for every knob in the table
OTHER = {"prompt": "a fox, ink drawing", "negative_prompt": "blurry", "strength": 0.75, "guidance": 7.5,
         "delta": 0.5, "seed": 424242, "stability": 0.6, "smoothing": 0.2, "feedback": 0.3, "motion_guard": 0.8,
         "transition": 1.5, "slew": 0.5, "bpm": 90.0, "quantize": "bar",
         "lfo": "strength sine 4 0.1", "preset": "calm", "cue": "calm", "bypass": True,
         "attn_bank": 2, "attn_refresh": 3, "attn_fusion": 0.5,
         "control_scale": 0.4, "control_scale_2": 1.5, "control_scale_3": 0.0, "preprocessor": "depth",
         "preprocessor_2": "softedge", "preprocessor_3": "input"}
# stability goes first: it writes its parts (smoothing, motion_guard), and the experts sent after it override them


def osc(address: str, value=None) -> bytes:
    b = OscMessageBuilder(address)
    if value is not None:
        b.add_arg(int(value) if isinstance(value, bool) else value)
    return b.build().dgram


def test_every_knob_set_over_udp_shows_in_the_status_reply(tmp_path):
    assert set(OTHER) == set(PARAMS), "give OTHER a value for each knob of the table"
    presets = tmp_path / "presets.toml"
    presets.write_text('cues = ["calm"]\n[calm]\nstrength = 0.75\n', encoding="utf-8")
    store = ParamStore()
    with OscServer(store, port=0, presets=PresetLibrary(presets)) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5.0)
        for name, value in OTHER.items():
            assert value != PARAMS[name].default
            client.sendto(osc(PARAMS[name].osc, value), ("127.0.0.1", server.port))
        client.sendto(osc("/dreamcam/status"), ("127.0.0.1", server.port))
        reply = OscMessage(client.recvfrom(65535)[0])
    state = json.loads(reply.params[0])
    assert reply.address == "/dreamcam/state" and state["rejected_total"] == 0
    for name, value in OTHER.items():
        assert state[name] == pytest.approx(value), name


def test_the_engine_has_every_setter_the_table_names_and_defaults_pass_their_own_checks():
    for p in PARAMS.values():
        assert p.validate(p.default) == p.default, p.name
        if p.apply is Apply.FENCE:
            assert callable(getattr(StreamEngine, p.setter, None)), f"{p.name}: StreamEngine.{p.setter}"
        assert p.setter is None or p.apply is not Apply.STORE, f"{p.name}: a stored knob writes no engine setter"


def test_preset_keys_are_the_presettable_knobs():
    assert preset_keys() == [p.name for p in PARAMS.values() if p.presettable]
    assert {"preset", "bypass"}.isdisjoint(preset_keys())
    with pytest.raises(ConfigError, match=r"unknown key 'bypass'; known: " + ", ".join(preset_keys())):
        parse_presets("[a]\nbypass = true\n")


@pytest.mark.parametrize(
    "name, value, kind",
    [("strength", "0.5", "bad_type"), ("strength", float("nan"), "not_finite"), ("seed", 1.5, "bad_type"),
     ("seed", -1, "out_of_range"), ("bypass", 2, "out_of_range"), ("prompt", "x" * 4097, "too_long"),
     ("preset", "x" * 257, "too_long"), ("prompt", 5, "bad_type")],
)
def test_a_refused_value_says_its_kind(name, value, kind):
    with pytest.raises(KnobError) as e:
        PARAMS[name].validate(value)
    assert e.value.kind == kind and isinstance(e.value, ConfigError)


def test_describe_is_plain_json_in_table_order():
    assert json.loads(json.dumps(describe())) == describe()
    assert [k["name"] for k in describe()] == list(PARAMS)


def test_knobs_kept_by_the_controller_need_no_fence(tiny_pipe):
    """A fence makes the next frame wait for those in flight: transition and bypass write nothing
    to the engine, so changing them alone must not cost one."""
    engine = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="none")
    engine.prepare("a cat")
    fences = []
    store = ParamStore({"prompt": "a cat"})
    with Controller(engine, store) as ctrl:
        store.update({"transition": 2.0, "bypass": True})
        ctrl.apply(lambda: fences.append(1))
        assert fences == [] and ctrl.transition == 2.0 and ctrl.bypass is True
        store.update({"transition": 0.0, "seed": 9})  # the seed applies at once: the new transition came first
        ctrl.apply(lambda: fences.append(1))
        assert fences == [1] and engine.seed == 9 and not ctrl.transitioning
