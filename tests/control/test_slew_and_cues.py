"""Smooth hands: continuous knobs glide over `slew` seconds on the real tiny engine (a clock the
test drives), discrete ones never glide; cues from the presets file stepped over real UDP."""

from __future__ import annotations

import json
import socket
import time

import pytest
from dreamcam import StreamEngine
from dreamcam.control.controller import Controller
from dreamcam.control.osc.server import OscServer
from dreamcam.control.presets import PresetLibrary, parse_presets_and_cues
from dreamcam.control.slew import Slew, gliding_knobs
from dreamcam.errors import ConfigError
from dreamcam.knobs import ParamStore
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

HOST = "127.0.0.1"


def test_continuous_knobs_glide_and_discrete_ones_do_not():
    assert {"strength", "guidance", "delta"} <= set(gliding_knobs())
    assert not {"seed", "preset", "cue", "bypass", "prompt", "transition", "slew"} & set(gliding_knobs())


def test_slew_is_a_straight_line_and_a_new_target_starts_from_where_it_is():
    s = Slew({"delta": 1.0}, 0.2)
    s.target("delta", 2.0, now=10.0)
    assert s.step(10.0)["delta"] == pytest.approx(1.0)
    assert s.step(10.1)["delta"] == pytest.approx(1.5)
    s.target("delta", 0.0, now=10.1)  # a jittery fader turns round mid-glide: no jump
    assert s.step(10.1)["delta"] == pytest.approx(1.5)
    assert s.step(10.2)["delta"] == pytest.approx(0.75)
    assert s.step(10.3) == {"delta": 0.0} and not s.active
    s.retime(0.0)
    s.target("delta", 3.0, now=11.0)
    assert s.step(11.0) == {"delta": 3.0}  # slew 0: at once


class Spy:
    """Records every value the controller hands to the real engine's setters."""

    def __init__(self, engine: StreamEngine, names=("set_delta", "set_guidance", "set_strength", "set_seed")):
        self.calls: list[tuple[str, float]] = []
        for name in names:
            setattr(engine, name, self._wrap(name, getattr(engine, name)))

    def _wrap(self, name, setter):
        def call(value):
            self.calls.append((name, value))
            return setter(value)

        return call

    def values(self, name):
        return [v for n, v in self.calls if n == name]


@pytest.fixture
def engine(tiny_pipe):
    e = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="self")
    e.prepare("a cat", guidance_scale=1.2, delta=1.0, seed=2)
    return e


def test_a_jump_glides_over_slew_seconds_on_the_engine(engine):
    spy = Spy(engine)
    now = [100.0]
    store = ParamStore({"prompt": "a cat", "slew": 0.5, "transition": 0.0})
    fences = []
    with Controller(engine, store, clock=lambda: now[0]) as ctrl:
        store.update({"delta": 3.0, "seed": 77})  # a preset's jump: delta glides, the seed does not
        ctrl.apply(lambda: fences.append(now[0]))
        assert spy.values("set_seed") == [77]
        for _ in range(10):  # 30 fps frames
            now[0] += 1 / 30
            ctrl.apply(lambda: fences.append(now[0]))
        mid = engine.delta
        assert 1.5 < mid < 2.5  # a third of the way at 0.33 s of 0.5 s
        for _ in range(10):
            now[0] += 1 / 30
            ctrl.apply(lambda: fences.append(now[0]))
        assert engine.delta == pytest.approx(3.0) and not ctrl.transitioning
        deltas = spy.values("set_delta")
        assert deltas == sorted(deltas) and deltas[-1] == 3.0
        steps = [b - a for a, b in zip(deltas, deltas[1:])]
        assert max(steps) <= 2.0 / 15 + 1e-6  # no frame moves more than its share of the glide
        assert len(fences) >= len(deltas)  # every write came after a fence
        n = len(spy.calls)
        ctrl.apply(lambda: fences.append(now[0]))
        assert len(spy.calls) == n  # the glide is over: nothing more is written


def test_a_jittery_fader_is_followed_smoothly(engine):
    spy = Spy(engine)
    now = [0.0]
    store = ParamStore({"prompt": "a cat", "slew": 0.2})
    with Controller(engine, store, clock=lambda: now[0]) as ctrl:
        for i in range(60):
            store.set("guidance", 2.0 + (0.5 if i % 2 else -0.5))  # a fader flickering between 1.5 and 2.5
            now[0] += 1 / 60
            ctrl.apply()
        g = spy.values("set_guidance")
        assert all(abs(b - a) < 0.15 for a, b in zip(g, g[1:]))  # a twelfth of the way a frame, never the 1.0 jump
        assert 1.2 < g[-1] < 2.5


PRESETS = """\
cues = ["intro", "verse", "drop"]

[intro]
prompt = "a misty forest"
strength = 0.3

[verse]
prompt = "a neon city"
strength = 0.5

[drop]
prompt = "an explosion of colour"
strength = 0.8

[spare]
prompt = "not in the show"
"""


def test_cue_list_is_read_and_checked(tmp_path):
    presets, cues = parse_presets_and_cues(PRESETS)
    assert cues == ["intro", "verse", "drop"] and "spare" in presets
    with pytest.raises(ConfigError, match=r"line 1: the cue list names 'chorus'"):
        parse_presets_and_cues('cues = ["intro", "chorus"]\n[intro]\nstrength = 0.3\n', "p.toml")
    with pytest.raises(ConfigError, match="cues must be a list of preset names"):
        parse_presets_and_cues('[cues]\nstrength = 0.3\n', "p.toml")
    path = tmp_path / "p.toml"
    path.write_text(PRESETS)
    lib = PresetLibrary(path)
    assert lib.step_cue("", "next") == "intro"
    assert lib.step_cue("intro", "next") == "verse"
    assert lib.step_cue("drop", "next") == "drop"  # the list does not wrap around
    assert lib.step_cue("intro", "previous") == "intro"
    assert lib.step_cue("spare", "previous") == "intro"  # not in the show: from the start
    with pytest.raises(ConfigError, match="no cue named 'spare'"):
        lib.step_cue("intro", "spare")


def query(sock, port) -> dict:
    sock.sendto(OscMessageBuilder("/dreamcam/status").build().dgram, (HOST, port))
    return json.loads(OscMessage(sock.recvfrom(65535)[0]).params[0])


def send(sock, port, address, value):
    b = OscMessageBuilder(address)
    b.add_arg(value)
    sock.sendto(b.build().dgram, (HOST, port))


def test_cues_step_over_osc_and_show_in_status(tmp_path):
    """/dreamcam/cue next|previous|NAME as a controller, a MIDI pad bound to it or the OBS
    hotkey sends it, on a real socket; the current cue shows in /dreamcam/status."""
    path = tmp_path / "show.toml"
    path.write_text(PRESETS)
    store = ParamStore()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(5)
    with sock, OscServer(store, port=0, presets=PresetLibrary(path)) as srv:
        assert query(sock, srv.port)["cue"] == ""
        send(sock, srv.port, "/dreamcam/cue", "next")
        st = query(sock, srv.port)
        assert (st["cue"], st["preset"], st["prompt"], st["strength"]) == ("intro", "intro", "a misty forest", 0.3)
        send(sock, srv.port, "/dreamcam/cue", "next")
        send(sock, srv.port, "/dreamcam/cue", "next")
        assert query(sock, srv.port)["cue"] == "drop"
        send(sock, srv.port, "/dreamcam/cue", "next")  # the last cue stays
        send(sock, srv.port, "/dreamcam/cue", "previous")
        st = query(sock, srv.port)
        assert (st["cue"], st["prompt"]) == ("verse", "a neon city")
        send(sock, srv.port, "/dreamcam/cue", "intro")
        assert query(sock, srv.port)["cue"] == "intro"
        send(sock, srv.port, "/dreamcam/cue", "spare")  # a preset, but not a cue
        send(sock, srv.port, "/dreamcam/cue", 3)
        deadline = time.monotonic() + 5
        while (st := query(sock, srv.port))["rejected_total"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert st["rejected"]["unknown_preset"] == 1 and st["rejected"]["bad_args"] == 1
        assert st["cue"] == "intro"


def test_a_cue_without_a_cue_list_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[a]\nstrength = 0.3\n')
    store = ParamStore()
    with OscServer(store, port=0, presets=PresetLibrary(path)) as srv:
        assert srv.handle_datagram(OscMessageBuilder("/dreamcam/cue").build().dgram, (HOST, 1)) == []
        b = OscMessageBuilder("/dreamcam/cue")
        b.add_arg("next")
        srv.handle_datagram(b.build().dgram, (HOST, 1))
        assert srv.rejected["unknown_preset"] == 1 and srv.rejected["bad_args"] == 1
        assert store.get("cue") == ""


def test_run_starts_at_a_cue(tmp_path):
    from dreamcam.cli.main import build_parser
    from dreamcam.cli.run_options import live_control

    path = tmp_path / "show.toml"
    path.write_text(PRESETS)
    args = build_parser("run").parse_args(["run", "--presets", str(path), "--cue", "next", "--slew", "0.3"])
    store, _, _ = live_control(args)
    assert (store.get("cue"), store.get("preset"), store.get("strength"), store.get("slew")) == ("intro", "intro", 0.3, 0.3)
    args = build_parser("run").parse_args(["run", "--presets", str(path), "--cue", "drop"])
    assert live_control(args)[0].get("prompt") == "an explosion of colour"
    with pytest.raises(ConfigError, match="--cue NAME needs --presets"):
        live_control(build_parser("run").parse_args(["run", "--cue", "next"]))
    with pytest.raises(ConfigError, match="no cue named 'nope'"):
        live_control(build_parser("run").parse_args(["run", "--presets", str(path), "--cue", "nope"]))
