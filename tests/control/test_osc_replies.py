"""Replies cannot be turned against someone else: each fits one datagram (long presets lists and
prompts are cut, and said so), one sender gets at most REPLY_RATE a second, and a listen address
other machines reach is refused unless --osc-allow says who may talk."""

from __future__ import annotations

import json
import logging
import socket

import pytest
from dreamcam.cli.main import main as cli
from dreamcam.control.osc.dispatch import PRESETS_PAGE, REPLY_BURST, REPLY_MAX_BYTES, OscDispatcher
from dreamcam.control.osc.server import OscServer
from dreamcam.control.presets import PresetLibrary
from dreamcam.errors import ConfigError
from dreamcam.knobs import ParamStore
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

FAR = ("192.0.2.5", 50000)  # a sender elsewhere (documentation range; no packet goes there)


def msg(address: str, *args) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


@pytest.fixture
def many_presets(tmp_path):
    """300 presets with 250-character names: their list alone is over 75 KB."""
    path = tmp_path / "presets.toml"
    path.write_text("".join(f'["{i:03d}' + "n" * 247 + f'"]\nseed = {i}\n' for i in range(300)))
    return PresetLibrary(path)


def test_one_far_sender_gets_a_burst_of_replies_then_none(caplog):
    d = OscDispatcher(ParamStore())
    with caplog.at_level(logging.WARNING):
        replies = [r for _ in range(100) for r in d.handle_datagram(msg("/dreamcam/status"), FAR)]
    assert len(replies) == REPLY_BURST and d.rejected["rate_limited"] == 100 - REPLY_BURST
    assert sum("rate_limited" in r.getMessage() for r in caplog.records) == 1  # logged once, then counted
    assert len(d.handle_datagram(msg("/dreamcam/knobs"), ("192.0.2.6", 1))) == 1  # another sender is not held up
    assert len(d.handle_datagram(msg("/dreamcam/status"), ("127.0.0.1", 1))) == 1  # loopback is never limited


def test_status_with_long_prompts_fits_the_reply_bound():
    store = ParamStore({"prompt": "\u6f22" * 4096, "negative_prompt": "\u6f22" * 4096})
    reply = OscDispatcher(store).handle_datagram(msg("/dreamcam/status"), FAR)[0]
    assert len(reply) <= REPLY_MAX_BYTES + 64  # the JSON string, plus the OSC address and padding


def test_a_status_over_one_datagram_is_cut_logged_and_sent_over_udp(many_presets, caplog):
    with caplog.at_level(logging.WARNING), OscServer(ParamStore(), port=0, presets=many_presets) as srv, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(msg("/dreamcam/status"), ("127.0.0.1", srv.port))
        data, _ = sock.recvfrom(65536)
        state = json.loads(OscMessage(data).params[0])
        assert state["presets_total"] == 300 and 0 < len(state["presets"]) < 300
        assert state["presets"] == many_presets.names()[: len(state["presets"])]
        assert any("lists %d of 300 presets" % len(state["presets"]) in r.getMessage() for r in caplog.records)
        names = []
        for page in range(300 // PRESETS_PAGE):
            sock.sendto(msg("/dreamcam/presets", page), ("127.0.0.1", srv.port))
            reply = json.loads(OscMessage(sock.recvfrom(65536)[0]).params[0])
            assert (reply["page"], reply["pages"], reply["total"]) == (page, 300 // PRESETS_PAGE, 300)
            names += reply["names"]
        assert names == many_presets.names()


def test_presets_page_takes_one_optional_whole_number(many_presets):
    d = OscDispatcher(ParamStore(), presets=many_presets)
    first = json.loads(OscMessage(d.handle_datagram(msg("/dreamcam/presets"), FAR)[0]).params[0])
    assert first["page"] == 0 and len(first["names"]) == PRESETS_PAGE
    assert d.handle_datagram(msg("/dreamcam/presets", -1), FAR) == [] and d.rejected["bad_args"] == 1


def test_a_listen_address_others_reach_is_refused_without_osc_allow():
    with pytest.raises(ConfigError, match="without --osc-allow.*--osc-allow any"):
        OscServer(ParamStore(), host="0.0.0.0", port=0).start()
    with OscServer(ParamStore(), host="0.0.0.0", port=0, allow="any") as srv:
        assert srv.allow is None
    with OscServer(ParamStore(), host="0.0.0.0", port=0, allow="127.0.0.1") as srv:
        assert srv.allow == frozenset({"127.0.0.1"})


def test_dreamcam_run_refuses_it_in_one_line(capsys):
    code = cli(["run", "--model", "tiny", "--width", "64", "--height", "64", "--sink", "null", "--frames", "1",
                "--source", "testpattern", "--osc-host", "0.0.0.0", "--osc-port", "0"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and any("without --osc-allow" in ln for ln in lines), err
    assert "Traceback" not in err
