"""DreamcamLink (the OBS script's logic, without OBS) keeps a dreamcam in step with the values set
in OBS: against a real python-osc UDP server standing in for dreamcam's OSC server (it answers
/dreamcam/status with its state and follows what it receives, as dreamcam does)."""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from pathlib import Path

# the OBS script runs in OBS's own Python: its modules are imported from obs_scripts/, not installed
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "obs_scripts"))

import dreamcam_link as dl  # noqa: E402
from obs_harness import OscPeer, free_port  # noqa: E402
from waiting import wait_until  # noqa: E402

DEFAULTS = {p.name: p.default for p in dl.PARAMS}
OBS = {"prompt": "a fox, ink drawing", "strength": 0.55}


class Clock:
    """A settable monotonic clock, so silences need no sleeping."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def dreamcam_state(**extra):
    return dict(DEFAULTS, presets=["calm"], fps=20.0, latency_ms=30.0, **extra)


def poll_until(link, clock, predicate, what):
    def done():
        clock.t += 0.1
        link.poll()
        return predicate()
    wait_until(done, what=what)


def settle(link, clock, polls=5):
    for _ in range(polls):
        clock.t += 0.1
        link.poll()
        time.sleep(0.05)


def knob_messages(peer):
    return [(a.rsplit("/", 1)[1], args) for a, args in peer.received if a not in ("/dreamcam/status", "/dreamcam/knobs")]


def test_a_dreamcam_started_later_gets_the_values_and_only_those():
    clock = Clock()
    port = free_port(socket.SOCK_DGRAM)
    with dl.DreamcamLink("127.0.0.1", port, clock=clock) as link:
        assert set(link.update(OBS)) == set(OBS)  # sent into the void: nobody listens yet
        clock.t += 5
        link.poll()
        with OscPeer(state=dreamcam_state(bypass=True, instance="a"), port=port) as peer:
            poll_until(link, clock, lambda: peer.state["prompt"] == OBS["prompt"], "the values")
            settle(link, clock)
            assert sorted(name for name, _ in knob_messages(peer)) == ["prompt", "strength"]
            assert peer.state["bypass"] is True  # never set here: never sent
            assert link.status() == "connected: 20.0 fps, 30 ms"


def test_a_new_instance_gets_them_again_and_the_same_one_after_a_silence_does_not():
    clock = Clock()
    with OscPeer(state=dreamcam_state(instance="a")) as peer, \
            dl.DreamcamLink("127.0.0.1", peer.port, clock=clock) as link:
        link.update(OBS)
        poll_until(link, clock, lambda: link.connected, "an answer")
        settle(link, clock)
        n = len(knob_messages(peer))
        # the same dreamcam, silent for a while (a network hiccup), then answering again: nothing re-sent
        clock.t += 10
        assert link.status().startswith("no answer")
        poll_until(link, clock, lambda: link.connected, "an answer after the silence")
        settle(link, clock)
        assert len(knob_messages(peer)) == n
        # restarted at once, with its defaults: a new instance, and the values set here again
        peer.state.update(dreamcam_state(instance="b"))
        poll_until(link, clock, lambda: peer.state["prompt"] == OBS["prompt"], "the values for the new instance")
        settle(link, clock)
        assert sorted(name for name, _ in knob_messages(peer)[n:]) == ["prompt", "strength"]


def test_without_an_instance_id_a_silence_counts_as_a_restart():
    clock = Clock()
    with OscPeer(state=dreamcam_state()) as peer, dl.DreamcamLink("127.0.0.1", peer.port, clock=clock) as link:
        link.update(OBS)
        poll_until(link, clock, lambda: link.connected, "an answer")
        peer.state.update(dreamcam_state())  # dreamcam restarted with its defaults
        clock.t += 10
        poll_until(link, clock, lambda: peer.state["prompt"] == OBS["prompt"], "the values after the silence")


def test_a_preset_set_here_is_sent_first_then_every_value_over_it():
    clock = Clock()
    with OscPeer(state=dreamcam_state(instance="a")) as peer, dl.DreamcamLink("127.0.0.1", peer.port, clock=clock) as link:
        link.update(dict(OBS, preset="calm"))
        poll_until(link, clock, lambda: link.connected, "an answer")
        peer.state.update(dreamcam_state(instance="b", prompt=OBS["prompt"], strength=0.55))  # restarted with the same flags
        peer.received.clear()
        poll_until(link, clock, lambda: len(knob_messages(peer)) >= 3, "the preset and the values")
        assert [name for name, _ in knob_messages(peer)] == ["preset", "prompt", "strength"]


def test_loading_model_is_said_while_dreamcam_loads():
    clock = Clock()
    with OscPeer(state={"loading": True, "instance": "a"}) as peer, \
            dl.DreamcamLink("127.0.0.1", peer.port, clock=clock) as link:
        poll_until(link, clock, lambda: link.state is not None, "an answer")
        assert link.status() == f"loading model (dreamcam at 127.0.0.1:{peer.port})"
        assert not link.connected


def test_a_value_unchanged_in_obs_does_not_undo_another_controller():
    clock = Clock()
    with OscPeer(state=dreamcam_state(instance="a")) as peer, dl.DreamcamLink("127.0.0.1", peer.port, clock=clock) as link:
        link.update(dict(OBS, bypass=False))
        poll_until(link, clock, lambda: link.connected, "an answer")
        peer.state["bypass"] = True  # another controller turns bypass on
        poll_until(link, clock, lambda: link.bypass, "the bypass from dreamcam's state")
        n = len(knob_messages(peer))
        assert link.update(dict(OBS, bypass=False, seed=9)) == ["seed"]  # OBS's bypass box did not change
        settle(link, clock)
        assert peer.state["bypass"] is True and knob_messages(peer)[n:] == [("seed", [9])]
        assert link.toggle_bypass() is False  # the hotkey flips what dreamcam has


def test_forgotten_values_are_not_sent_to_a_new_instance():
    clock = Clock()
    with OscPeer(state=dreamcam_state(instance="a")) as peer, dl.DreamcamLink("127.0.0.1", peer.port, clock=clock) as link:
        link.update(OBS)
        poll_until(link, clock, lambda: link.connected, "an answer")
        link.forget(["strength"])  # reset to its default in OBS
        peer.state.update(dreamcam_state(instance="b"))
        poll_until(link, clock, lambda: peer.state["prompt"] == OBS["prompt"], "the values for the new instance")
        settle(link, clock)
        assert peer.state["strength"] == DEFAULTS["strength"]


def test_a_host_that_does_not_resolve_is_said_from_the_polling_thread_and_tried_again(monkeypatch):
    clock = Clock()
    logged = []
    lookups = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        lookups.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(dl.socket, "getaddrinfo", getaddrinfo)
    host = "dreamcam-no-such-host.invalid"  # never resolves (RFC 6761)
    link = dl.DreamcamLink(host, 9000, clock=clock,
                           log=lambda level, msg: logged.append((threading.current_thread().name, level, msg)))
    with link:
        wait_until(lambda: link.poll().startswith("cannot resolve"), what="the failed look-up")
        assert link.status().startswith(f"cannot resolve dreamcam host '{host}': ")
        assert link.status().endswith("check the OSC host")
        link.poll()
        assert [(t, lv) for t, lv, _ in logged] == [(threading.current_thread().name, logging.WARNING)]
        assert lookups == [host]
        clock.t += dl.RESOLVE_RETRY_S
        link.poll()
        wait_until(lambda: len(lookups) == 2, what="a second look-up")
        assert link.status().startswith("cannot resolve")  # still failing; no second log line
        assert len(logged) == 1


def test_state_fields_of_another_shape_are_read_defensively():
    state = dl.parse_state(['{"presets": {"names": ["a"], "more": 3}, "fps": "fast", "instance": 7}'])
    assert state["presets"] == [] and dl.status_line(state, "h", 1) == "connected: ? fps, ? ms"
    assert dl.parse_state(['{"presets": ["a", 3, null, "b"]}'])["presets"] == ["a", "b"]
    assert dl.parse_state(["{}"])["presets"] == []
