"""DreamcamLink (the OBS script's logic, without OBS) against a real python-osc UDP server.

The server stands in for dreamcam's OSC server: it records what arrives and answers
/dreamcam/status with a /dreamcam/state JSON, as design.md says. Windows' socket errors on the
link's first poll are stood in for.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import time
from pathlib import Path

import pytest

# the OBS script runs in OBS's own Python: its modules are imported from obs_scripts/, not installed
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "obs_scripts"))

import dreamcam_link as dl  # noqa: E402
from obs_harness import OscPeer, free_port  # noqa: E402
from waiting import wait_until  # noqa: E402

SETTINGS = {"preset": "", "prompt": "a fox, ink drawing", "negative_prompt": "", "strength": 0.6,
            "guidance": 1.5, "delta": 1.0, "seed": 7, "transition": 0.0, "bypass": False}


class Clock:
    """A settable monotonic clock, so status time-outs need no sleeping."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def peer():
    with OscPeer(state={"presets": ["calm", "storm", "neon"], "preset": "calm", "fps": 24.83,
                        "latency_ms": 41.2, "dropped": 0, "bypass": False}) as p:
        yield p


def _poll_until_connected(link, clock):
    def answered():
        clock.t += 0.1
        return link.poll().startswith("connected")
    wait_until(answered, what="a /dreamcam/state reply")


def test_sends_every_value_once_then_only_changes(peer):
    with dl.DreamcamLink("127.0.0.1", peer.port) as link:
        sent = link.update(SETTINGS)
        assert set(sent) == set(SETTINGS) - {"preset"}  # no preset chosen: nothing to send
        peer.wait_for("/dreamcam/seed")
        assert link.update(SETTINGS) == []
        assert link.update(dict(SETTINGS, strength=0.25)) == ["strength"]
        assert peer.wait_for("/dreamcam/strength", lambda a: a[0] == pytest.approx(0.25))
        wait_until(lambda: len(peer.received) == len(SETTINGS), what="all messages")
        time.sleep(0.2)  # nothing else may trickle in
        names = sorted(a.rsplit("/", 1)[1] for a, _ in peer.received)
        assert names == sorted([*(set(SETTINGS) - {"preset"}), "strength"])


def test_bad_values_are_not_sent_and_logged_once(peer):
    logged = []
    with dl.DreamcamLink("127.0.0.1", peer.port, log=lambda level, msg: logged.append(msg)) as link:
        assert link.update({"strength": 1.5, "seed": -1, "prompt": "x" * 5000}) == []
        link.update({"strength": 1.5})
        assert len(logged) == 3
        assert "strength must be between 0.0 and 1.0, got 1.5" in logged[0]
        assert link.update({"strength": 0.5}) == ["strength"]


def test_status_line_presets_and_hotkey_actions(peer):
    clock = Clock()
    peer.follow = False  # replies keep saying "calm" until the test changes the state
    with dl.DreamcamLink("127.0.0.1", peer.port, clock=clock) as link:
        link.update(SETTINGS)
        _poll_until_connected(link, clock)
        assert link.status() == "connected: 24.8 fps, 41 ms"
        assert link.presets == ["calm", "storm", "neon"]
        assert link.current_preset == "calm"
        assert link.step_preset(+1) == "storm"
        peer.wait_for("/dreamcam/preset", lambda a: a == ["storm"])
        # Replies still saying "calm" (sent before "storm" was applied) must not undo the step.
        n = len(peer.received)
        wait_until(lambda: (link.poll(), len(peer.received) > n + 2)[1], what="more status polls")
        assert link.step_preset(+1) == "neon"
        peer.wait_for("/dreamcam/preset", lambda a: a == ["neon"])
        # Another controller picks "storm": the link follows on the next reply.
        peer.state["preset"] = "storm"
        wait_until(lambda: (link.poll(), link.current_preset == "storm")[1], what="the preset from state")
        assert link.step_preset(-1) == "calm"
        assert link.toggle_bypass() is True
        peer.wait_for("/dreamcam/bypass", lambda a: a == [1])
        assert link.toggle_bypass() is False
        peer.wait_for("/dreamcam/bypass", lambda a: a == [0])


def test_no_answer_then_connected_when_dreamcam_appears():
    clock = Clock()
    port = free_port(socket.SOCK_DGRAM)
    with dl.DreamcamLink("localhost", port, clock=clock, no_answer_s=2.0) as link:
        assert link.poll() == f"waiting for dreamcam at localhost:{port}"
        clock.t += 2.5
        assert link.poll() == f"no answer from dreamcam at localhost:{port}"
        with OscPeer(state={"fps": 30, "latency_ms": 12.4}, port=port) as peer:
            _poll_until_connected(link, clock)
            assert link.status() == "connected: 30.0 fps, 12 ms"
            assert peer.wait_for("/dreamcam/status") == []  # no arguments
        clock.t += 2.5
        assert link.status() == f"no answer from dreamcam at localhost:{port}"


def test_new_target_gets_everything_again_and_close_is_final(peer):
    with OscPeer(state={}) as other:
        link = dl.DreamcamLink("127.0.0.1", peer.port)
        link.update(SETTINGS)
        link.set_target("127.0.0.1", other.port)
        assert set(link.flush()) == set(SETTINGS) - {"preset"}
        other.wait_for("/dreamcam/prompt", lambda a: a == [SETTINGS["prompt"]])
        link.close()
        link.close()
        assert link.update(dict(SETTINGS, seed=8)) == []
    with pytest.raises(ValueError, match="1..65535"):
        dl.DreamcamLink("127.0.0.1", 70000)


def test_garbage_reply_is_ignored_and_logged(peer):
    logged = []
    clock = Clock()
    with dl.DreamcamLink("127.0.0.1", peer.port, clock=clock, log=lambda lv, m: logged.append(m)) as link:
        peer.reply_raw = b"\x00garbage"
        clock.t += 0.1
        link.poll()
        wait_until(lambda: (link.poll(), bool(logged))[1], what="a logged bad reply")
        assert "bad reply" in logged[0]
        assert not link.status().startswith("connected")


def test_pure_helpers():
    assert dl.next_preset([], "a", 1) is None
    assert dl.next_preset(["a", "b"], "", 1) == "a"
    assert dl.next_preset(["a", "b"], "", -1) == "b"
    assert dl.next_preset(["a", "b"], "b", 1) == "a"
    assert dl.status_line({"fps": "x"}, "h", 1) == "connected: ? fps, ? ms"
    assert dl.status_line(None, "10.0.0.2", 9000) == "no answer from dreamcam at 10.0.0.2:9000"
    with pytest.raises(ValueError, match="whole number"):
        dl.coerce("seed", 1.5)
    assert dl.coerce("seed", 3.0) == 3 and dl.coerce("bypass", 1) is True


def test_script_parameters_mirror_dreamcam_params():
    """OBS's Python cannot import dreamcam, so the script reads the table as data: they must agree."""
    from dreamcam import knobs as params

    kinds = {str: "text", float: "float", int: "int", bool: "bool"}
    assert set(dl.PARAM_BY_NAME) == set(params.PARAMS)
    for name, ours in dl.PARAM_BY_NAME.items():
        theirs = params.PARAMS[name]
        assert ours.kind == kinds[theirs.kind], name
        assert ours.default == theirs.default, name
        if theirs.lo is not None:
            assert theirs.lo <= ours.lo <= ours.hi <= theirs.hi, name  # OBS sliders may be narrower


# Windows: Winsock's recvfrom on a UDP socket that has sent nothing yet (so is unbound) fails with
# WSAEINVAL, which Python raises as OSError(errno EINVAL, winerror 10022); Linux says "nothing
# there" instead. poll() reads before it sends, so its first read after a host name was looked up
# meets that error. Winsock cannot exist here: the link's socket is a real one whose recvfrom
# answers as Winsock does until the socket has sent.
_REAL_SOCKET = socket.socket


class _WinsockUdp:
    """A real UDP socket whose recvfrom fails like Winsock's until it has sent."""

    def __init__(self, family):
        self._sock = _REAL_SOCKET(family, socket.SOCK_DGRAM)
        self._sent = False

    def sendto(self, data, addr):
        self._sent = True
        return self._sock.sendto(data, addr)

    def recvfrom(self, n):
        if not self._sent:
            raise OSError(errno.EINVAL, "An invalid argument was supplied")
        return self._sock.recvfrom(n)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_first_poll_before_anything_was_sent_is_quiet_and_connects(monkeypatch):
    logged = []
    with OscPeer(state={"presets": [], "fps": 20.0, "latency_ms": 30.0}) as peer:
        link = dl.DreamcamLink("127.0.0.1", peer.port, log=lambda level, msg: logged.append((level, msg)))
        monkeypatch.setattr(dl.socket, "socket", lambda family, kind: _WinsockUdp(family))
        with link:
            link._close_socket()  # as after a name look-up: the next poll makes the socket and reads first
            wait_until(lambda: link.poll().startswith("connected"), what="a /dreamcam/state reply")
    assert not [msg for level, msg in logged if level >= logging.WARNING], logged
