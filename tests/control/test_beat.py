"""On the beat: the beat clock (fixed, tap, Ableton Link), quantised changes landing on the beat
on the real tiny engine, transitions in beats, tempo-synced LFOs, /dreamcam/tap.

Quantising and LFOs run against a clock the test drives (frames of 1/30 s, no sleeping); Link
runs for real: two Link peers in this process find each other over loopback."""

from __future__ import annotations

import json
import socket
import time

import pytest
import torch
from dreamcam import StreamEngine
from dreamcam.cli.console import beat_text
from dreamcam.control.beat import BeatSync
from dreamcam.control.clock import BeatClock, LinkSession
from dreamcam.control.controller import Controller
from dreamcam.control.lfo import Lfo, parse_lfos
from dreamcam.control.osc.server import OscServer
from dreamcam.control.presets import parse_presets
from dreamcam.errors import ConfigError
from dreamcam.knobs import ParamStore
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from waiting import poll

FRAME = 1 / 30
HOST = "127.0.0.1"


class Driven:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_fixed_clock_beats_boundaries_and_a_tempo_change_without_a_jump():
    t = Driven()
    c = BeatClock(120, time=t)
    assert c.source == "fixed" and c.beat() == 0.0
    t.t += 1.25
    assert c.beat() == pytest.approx(2.5)
    assert c.next_boundary(t.t, 1) == pytest.approx(t.t + 0.25)  # beat 3
    assert c.next_boundary(t.t, 4) == pytest.approx(t.t + 0.75)  # the bar at beat 4
    c.set_bpm(60, t.t)
    assert c.beat() == pytest.approx(2.5)  # the beat goes on from where it was
    assert c.next_boundary(t.t, 1) == pytest.approx(t.t + 0.5)
    assert c.next_boundary(c.next_boundary(t.t, 1), 1) == pytest.approx(t.t + 0.5)  # on a beat: that beat


def test_tap_tempo_sets_the_tempo_and_the_tap_is_a_beat():
    t = Driven()
    c = BeatClock(120, time=t)
    assert c.tap() is None  # one tap is no tempo yet
    for _ in range(3):
        t.t += 0.6
        bpm = c.tap()
    assert bpm == 100.0 and c.source == "tap" and c.bpm() == 100.0
    assert c.beat() % 1 == pytest.approx(0.0)
    t.t += 5.0  # a long pause starts a new count
    assert c.tap() is None and c.bpm() == 100.0


def spy_setter(engine, name, calls, clock):
    setter = getattr(engine, name)

    def call(value):
        calls.append((clock.t, name, value))
        return setter(value)

    setattr(engine, name, call)


@pytest.fixture
def engine(tiny_pipe):
    e = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="self")
    e.prepare("a cat", guidance_scale=1.2, delta=1.0, seed=2)
    return e


@pytest.mark.parametrize("quantize, quantum", [("beat", 1), ("bar", 4)])
def test_a_quantised_preset_change_lands_within_one_frame_of_the_boundary(engine, quantize, quantum):
    t = Driven(500.0)
    beats = BeatClock(120, time=t)  # beat 0 at t = 500; a beat every 0.5 s
    calls = []
    spy_setter(engine, "set_delta", calls, t)
    spy_setter(engine, "set_seed", calls, t)
    store = ParamStore({"prompt": "a cat", "slew": 0.0, "transition": 0.0, "quantize": quantize})
    with Controller(engine, store, clock=t, beats=beats) as ctrl:
        for _ in range(4):
            t.t += FRAME
            ctrl.apply()
        t.t += 0.01  # off the frame grid
        store.update({"preset": "drop", "delta": 2.5, "seed": 99})  # a preset's values, sent at beat 0.3
        boundary = beats.next_boundary(t.t, quantum)
        assert boundary == pytest.approx(500.0 + 0.5 * quantum)
        while not calls:
            ctrl.apply()
            assert ctrl.sync.pending == (not calls)
            t.t += FRAME
            assert t.t < boundary + 1.0
        landed = calls[0][0]
        assert boundary - 1e-6 <= landed < boundary + FRAME  # the first frame at or after the boundary
        assert {(n, v) for _, n, v in calls} == {("set_delta", 2.5), ("set_seed", 99)}
        assert engine.seed == 99 and ctrl.sync.landed_at == landed


def test_a_fader_is_not_held_and_quantise_off_applies_at_once(engine):
    t = Driven(0.0)
    calls = []
    spy_setter(engine, "set_guidance", calls, t)
    spy_setter(engine, "set_seed", calls, t)
    store = ParamStore({"prompt": "a cat", "slew": 0.0, "transition": 0.0, "quantize": "bar"})
    with Controller(engine, store, clock=t, beats=BeatClock(120, time=t)) as ctrl:
        t.t = 0.3
        store.set("guidance", 2.0)  # a fader move alone is not a scene change
        ctrl.apply()
        assert calls == [(0.3, "set_guidance", 2.0)]
        store.set("quantize", "off")
        store.set("seed", 5)
        ctrl.apply()
        assert calls[-1] == (0.3, "set_seed", 5)


def test_a_quantised_prompt_waits_for_the_beat_then_fades_over_beats(engine):
    t = Driven(0.0)
    beats = BeatClock(120, time=t)
    store = ParamStore({"prompt": "a cat", "slew": 0.0, "transition": 2.0, "quantize": "beat"})  # 2 beats = 1 s
    with Controller(engine, store, clock=t, beats=beats) as ctrl:
        before = engine.prompt_embeds.clone()
        t.t = 0.1
        store.set("prompt", "a dog in the snow")
        assert ctrl.wait_encoded(10)  # encoded long before the beat
        while t.t < 0.5 - 1e-3:
            ctrl.apply()
            assert torch.equal(engine.prompt_embeds, before)  # held until beat 1 (t = 0.5)
            t.t += FRAME
        ctrl.apply()  # the first frame after the beat: the fade starts
        t.t = 0.5 + 0.9
        ctrl.apply()
        assert ctrl.transitioning  # 0.9 s into a fade of 2 beats (1 s)
        t.t = 0.5 + 1.05
        ctrl.apply()
        assert not ctrl.transitioning and engine.prompt == "a dog in the snow"
        want, _ = engine.encode_prompt("a dog in the snow", "")
        torch.testing.assert_close(engine.prompt_embeds[-1:].float(), want.float())


def test_lfo_shapes():
    for shape in ("sine", "triangle", "saw", "random"):
        lfo = Lfo("strength", shape, 4.0, 0.2)
        vals = [lfo.wave(b / 8) for b in range(64)]
        assert all(-1.0 <= v <= 1.0 for v in vals), shape
    sine, tri, saw = (Lfo("delta", s, 4.0, 1.0) for s in ("sine", "triangle", "saw"))
    assert (sine.wave(1.0), sine.wave(3.0)) == (pytest.approx(1.0), pytest.approx(-1.0))
    assert (tri.wave(0.0), tri.wave(1.0), tri.wave(2.0), tri.wave(3.0)) == (0.0, 1.0, 0.0, -1.0)
    assert (saw.wave(0.0), saw.wave(2.0)) == (-1.0, 0.0)
    rnd = Lfo("delta", "random", 2.0, 1.0)
    assert rnd.wave(0.1) == rnd.wave(1.9) != rnd.wave(2.1)  # one level a cycle
    assert Lfo("strength", "sine", 4.0, 0.5).value(0.9, 1.0) == 1.0  # kept inside the knob's range


def test_lfo_text_is_checked_everywhere():
    assert set(parse_lfos("strength sine 4 0.1; guidance triangle 2 0.5")) == {"strength", "guidance"}
    assert parse_lfos("") == {}
    for bad, why in [("seed sine 4 1", "cannot follow an LFO"), ("strength square 4 1", "shape must be"),
                     ("strength sine 0 1", "BEATS must be above 0"), ("strength sine 4", "KNOB SHAPE BEATS DEPTH"),
                     ("strength sine 4 -1", "DEPTH must be")]:
        with pytest.raises(ConfigError, match=why):
            parse_lfos(bad)
    with pytest.raises(ConfigError, match=r"line 3: preset 'breathe': lfo 'strength sine x 1'"):
        parse_presets('[breathe]\nstrength = 0.5\nlfo = "strength sine x 1"\n', "p.toml")
    assert parse_presets('[breathe]\nlfo = "strength sine 4 0.1"\n')["breathe"]["lfo"] == "strength sine 4 0.1"


def test_an_lfo_breathes_a_knob_in_beats_and_stopping_it_restores_its_value(engine):
    t = Driven(0.0)
    calls = []
    spy_setter(engine, "set_delta", calls, t)
    store = ParamStore({"prompt": "a cat", "slew": 0.0, "delta": 1.0})
    with Controller(engine, store, clock=t, beats=BeatClock(120, time=t)) as ctrl:
        store.set("lfo", "delta sine 4 0.5")  # a 4-beat (2 s) cycle, +-0.5 around delta
        seen = {}
        for i in range(61):
            t.t = i * FRAME
            ctrl.apply()
            seen[round(t.t, 3)] = engine.delta
        assert seen[0.5] == pytest.approx(1.5, abs=0.01)  # beat 1: the top
        assert seen[1.5] == pytest.approx(0.5, abs=0.01)  # beat 3: the bottom
        store.set("delta", 2.0)  # a fader moves the centre
        t.t = 2.5
        ctrl.apply()
        assert engine.delta == pytest.approx(2.5, abs=0.01)
        store.set("lfo", "")
        t.t = 2.6
        ctrl.apply()
        assert engine.delta == 2.0 and not ctrl.transitioning
        n = len(calls)
        ctrl.apply()
        assert len(calls) == n


def osc(address, *args) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def test_tap_over_osc_sets_bpm(tmp_path):
    t = Driven(0.0)
    beats = BeatClock(120, time=t)
    store = ParamStore()
    with OscServer(store, port=0, clock=beats) as srv:
        for _ in range(4):
            srv.handle_datagram(osc("/dreamcam/tap"), (HOST, 1))
            srv.handle_datagram(osc("/dreamcam/tap", 0.0), (HOST, 1))  # a pad's release: ignored
            t.t += 0.5
        assert store.get("bpm") == 120.0 and beats.source == "tap"
        t.t += 2.5  # a new count
        for _ in range(3):
            srv.handle_datagram(osc("/dreamcam/tap", 1.0), (HOST, 1))  # a MIDI pad bound to it sends a value
            t.t += 0.4
        assert store.get("bpm") == 150.0 and beats.bpm() == 150.0
        srv.handle_datagram(osc("/dreamcam/tap", 1, 2), (HOST, 1))
        assert srv.rejected["bad_args"] == 1
        # and over a real socket
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            t.t += 10
            for _ in range(2):
                s.sendto(osc("/dreamcam/tap"), (HOST, srv.port))
                time.sleep(0.2)
                t.t += 0.75
            s.sendto(osc("/dreamcam/status"), (HOST, srv.port))
            state = json.loads(OscMessage(s.recvfrom(65535)[0]).params[0])
        assert state["bpm"] == 80.0


def test_status_line_shows_the_beat_only_when_link_or_tap_drive_it():
    assert beat_text({"clock": "fixed", "tempo": 120.0, "bar_phase": 0.0, "link_peers": 0}) == ""
    assert beat_text({"clock": "link", "tempo": 124.0, "bar_phase": 2.25, "link_peers": 1}) == \
        " | 124.0 bpm link (1 peer) beat 3.2"
    assert beat_text({"clock": "tap", "tempo": 90.0, "bar_phase": 0.0, "link_peers": 0}) == " | 90.0 bpm tap beat 1.0"


def test_link_tempo_from_a_peer_shows_in_status_and_drives_the_quantiser():
    """Two Ableton Link peers on this machine (loopback): dreamcam's clock and a second peer as
    a DJ app would be; the peer's tempo change shows in /dreamcam/status over UDP."""
    link = pytest.importorskip("link")
    beats = BeatClock(120, link=LinkSession(120))
    peer = link.Link(120.0)
    peer.enabled = True
    try:
        assert poll(lambda: beats.link.peers() >= 1 and peer.numPeers() >= 1, 15), "Link peers did not find each other"
        state = peer.captureSessionState()
        state.setTempo(133.0, peer.clock().micros())
        peer.commitSessionState(state)
        assert poll(lambda: abs(beats.bpm() - 133.0) < 0.01, 15)
        store = ParamStore()
        with OscServer(store, port=0, clock=beats, status=beats.status) as srv, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(osc("/dreamcam/status"), (HOST, srv.port))
            st = json.loads(OscMessage(s.recvfrom(65535)[0]).params[0])
            assert st["clock"] == "link" and st["tempo"] == pytest.approx(133.0, abs=0.01) and st["link_peers"] >= 1
            srv.handle_datagram(osc("/dreamcam/tap"), (HOST, 1))
            srv.handle_datagram(osc("/dreamcam/tap"), (HOST, 1))
            assert store.get("bpm") == 120.0  # a peer sets the tempo: taps are ignored
        now = time.monotonic()
        edge = beats.next_boundary(now, 4)  # the next bar of the shared session
        assert now <= edge <= now + 4 * 60 / 133 + 0.01
        assert beats.beat(edge) == pytest.approx(round(beats.beat(edge)), abs=1e-3)
        assert round(beats.beat(edge)) % 4 == 0
        # our tempo change reaches the peer too
        beats.set_bpm(97.0)
        assert poll(lambda: abs(peer.captureSessionState().tempo() - 97.0) < 0.01, 15)
    finally:
        peer.enabled = False
        beats.close()


def test_beat_sync_without_quantise_passes_everything():
    t = Driven(0.0)
    sync = BeatSync(BeatClock(120, time=t), {"quantize": "off", "lfo": "", "bpm": 120.0})
    assert sync.gate({"prompt": "x", "preset": "p"}, "enc", 0.1) == ({"prompt": "x", "preset": "p"}, "enc")
    assert sync.fade_seconds(1.5) == 1.5
    sync.gate({"quantize": "bar", "bpm": 60.0}, None, 0.2)
    assert sync.fade_seconds(1.5) == pytest.approx(1.5)  # 1.5 beats at 60 bpm


def test_a_held_presets_lfo_and_tempo_land_with_it():
    t = Driven(0.0)
    clock = BeatClock(120, time=t)
    sync = BeatSync(clock, {"quantize": "bar", "lfo": "", "bpm": 120.0})
    t.t = 0.3
    assert sync.gate({"preset": "p", "lfo": "delta sine 4 1", "bpm": 90.0}, None, t.t) == ({}, None)
    assert not sync.lfos and clock.bpm() == 120.0 and sync.due == pytest.approx(2.0)
    t.t = 2.0
    changes, _ = sync.gate({}, None, t.t)
    assert changes["preset"] == "p" and set(sync.lfos) == {"delta"} and clock.bpm() == 90.0
