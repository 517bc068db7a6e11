"""The OBS script's link asks the running dreamcam for its knob table (/dreamcam/knobs) once it
answers, and uses it: a knob dreamcam has but dreamcam_knobs.json beside the script lacks (an
older file) is sent once dreamcam has told the link about it. Here dreamcam's real OSC server
has a knob added to its table (monkeypatched); the link's file is the repository's."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from dreamcam.control.osc.server import OscServer
from dreamcam.knobs import PARAMS, Apply, Param, ParamStore

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent / "obs_scripts"))

import dreamcam_link as dl  # noqa: E402
from obs_harness import OscPeer  # noqa: E402
from waiting import wait_until  # noqa: E402


@pytest.fixture
def grain(monkeypatch):
    monkeypatch.setitem(PARAMS, "grain", Param("grain", float, 0.0, "film grain over the output", 0.0, 1.0,
                                               label="Film grain", step=0.01, apply=Apply.FENCE, setter="set_grain"))


def test_a_knob_only_dreamcam_knows_is_sent_once_dreamcam_gave_its_table(grain):
    logged = []
    store = ParamStore()
    with OscServer(store, port=0) as server, \
            dl.DreamcamLink("127.0.0.1", server.port, log=lambda level, msg: logged.append((level, msg))) as link:
        assert "grain" not in dl.PARAM_BY_NAME  # the file beside the script does not have it
        assert link.update({"strength": 0.6, "grain": 0.3}) == ["strength"]
        wait_until(lambda: (link.poll(), store.get("grain") == pytest.approx(0.3))[1],
                   what="grain sent after dreamcam's knob table arrived")
        assert [p.name for p in link.params][0] == "preset" and "grain" in {p.name for p in link.params}
        assert link.update({"grain": 1.5}) == []  # dreamcam's range, 0..1, holds from now on
        assert store.get("strength") == pytest.approx(0.6) and sum(server.rejected.values()) == 0
    infos = [msg for level, msg in logged if level == logging.INFO]
    assert len(infos) == 1 and "using dreamcam's" in infos[0] and "dreamcam knobs --json" in infos[0]


def test_a_dreamcam_that_does_not_answer_the_query_is_asked_once_per_target():
    with OscPeer(state={"presets": [], "fps": 20.0, "latency_ms": 30.0}) as peer, \
            dl.DreamcamLink("127.0.0.1", peer.port) as link:
        wait_until(lambda: link.poll().startswith("connected"), what="a /dreamcam/state reply")
        for _ in range(5):
            link.poll()
        wait_until(lambda: sum(a == "/dreamcam/status" for a, _ in peer.received) >= 6, what="six status polls")
        assert [a for a, _ in peer.received].count("/dreamcam/knobs") == 1
        assert link.params == dl.PARAMS  # the file's table stays
