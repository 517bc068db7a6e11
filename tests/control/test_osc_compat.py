"""--osc-compat td|scope: StreamDiffusionTD's and daydream Scope's addresses, sent as those tools
send them (python-osc over real UDP on 127.0.0.1), change dreamcam's state as /dreamcam/status
shows it; StreamDiffusionTD's reports (/stream-info/fps, ...) reach a real python-osc server."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from dreamcam.control.osc.compat import SCOPE_ALIASES, TD_ALIASES, UNMAPPED, Compat
from dreamcam.control.osc.server import OscServer
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS, ParamStore
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

HOST = "127.0.0.1"


def status(sock: socket.socket, port: int) -> dict:
    """Ask /dreamcam/status from `sock` and return the JSON of its /dreamcam/state reply."""
    sock.sendto(build_message_noargs("/dreamcam/status"), (HOST, port))
    data, _ = sock.recvfrom(65535)
    m = OscMessage(data)
    assert m.address == "/dreamcam/state"
    return json.loads(m.params[0])


def build_message_noargs(address: str) -> bytes:
    return OscMessageBuilder(address).build().dgram


def settle(sock: socket.socket, port: int, cond, timeout: float = 10.0) -> dict:
    """Status replies until `cond(state)` holds (the server applies what it read before it answers)."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(sock, port)
        if cond(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.01)


@pytest.fixture
def reply_sock():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.settimeout(5.0)
    yield s
    s.close()


def serve(mode: str, **kw) -> tuple[OscServer, ParamStore]:
    store = ParamStore()
    srv = OscServer(store, port=0, compat=Compat(mode), status=lambda: {"fps": 24.5, "frames": 99}, **kw)
    return srv.start(), store


def test_touchdesigner_addresses_set_dreamcams_knobs(reply_sock):
    srv, store = serve("td")
    try:
        td = SimpleUDPClient(HOST, srv.port)  # as StreamDiffusionTD's OSC Out sends: flat addresses
        td.send_message("/prompt", "a marble statue")
        td.send_message("/negative_prompt", "blurry")
        td.send_message("/guidance_scale", 1.8)
        td.send_message("/delta", 0.7)
        td.send_message("/seed", 42.0)  # a CHOP channel is a float
        td.send_message("/t_list", [20, 35])  # one int argument per step
        st = settle(reply_sock, srv.port, lambda s: s["seed"] == 42 and s["strength"] != 0.4)
        assert st["prompt"] == "a marble statue"
        assert st["negative_prompt"] == "blurry"
        assert st["guidance"] == pytest.approx(1.8)
        assert st["delta"] == pytest.approx(0.7)
        assert st["seed"] == 42
        assert st["strength"] == pytest.approx(1 - 20 / 48, abs=1e-3)  # first index 20 of a 2-step, 50-step schedule
        # prompt_list: JSON [[text, weight], ...] becomes dreamcam's blend syntax
        td.send_message("/prompt_list", json.dumps([["a neon city", 0.7], ["rain, 16:9", 0.3]]))
        td.send_message("/seed_list", json.dumps([[7, 0.2], [1234, 0.8]]))
        st = settle(reply_sock, srv.port, lambda s: s["seed"] == 1234)
        assert st["prompt"] == "a neon city:0.7 | rain, 16:9:0.3"
        assert st["seed"] == 1234  # the heaviest: dreamcam does not blend seeds
        assert st["rejected_total"] == 0
    finally:
        srv.close()


def test_bad_and_unmapped_touchdesigner_messages_are_counted_not_applied(reply_sock):
    srv, store = serve("td")
    try:
        td = SimpleUDPClient(HOST, srv.port)
        td.send_message("/prompt_list", "not json")
        td.send_message("/prompt_list", json.dumps([["a", 0.0], ["b", 0.0]]))  # all weights 0
        td.send_message("/guidance_scale", 99.0)  # out of dreamcam's range: rejected, never clamped
        td.send_message("/sdmode", "txt2img")  # no counterpart
        td.send_message("/fx/latent_transform/zoom", 1.05)
        st = settle(reply_sock, srv.port, lambda s: s["rejected_total"] >= 5)
        assert st["rejected"]["bad_args"] == 1
        assert st["rejected"]["bad_prompt"] == 1
        assert st["rejected"]["out_of_range"] == 1
        assert st["rejected"]["unknown_address"] == 2
        assert st["prompt"] == PARAMS["prompt"].default and st["guidance"] == PARAMS["guidance"].default
    finally:
        srv.close()


def test_without_compat_their_addresses_are_unknown(reply_sock):
    store = ParamStore()
    with OscServer(store, port=0) as srv:
        SimpleUDPClient(HOST, srv.port).send_message("/prompt", "x")
        st = settle(reply_sock, srv.port, lambda s: s["rejected_total"] >= 1)
        assert st["rejected"]["unknown_address"] == 1 and st["prompt"] != "x"


def test_scope_addresses_set_dreamcams_knobs(reply_sock):
    srv, store = serve("scope")
    try:
        scope = SimpleUDPClient(HOST, srv.port)  # Scope's README example, pointed at dreamcam
        scope.send_message("/scope/prompt", "a glowing reef at night")
        scope.send_message("/scope/noise_scale", 0.75)
        scope.send_message("/scope/paused", True)  # no counterpart
        scope.send_message("/scope/tempo/tempoBpm", 128.0)  # a Tempo node under its default address
        st = settle(reply_sock, srv.port, lambda s: s["strength"] == 0.75 and s["rejected_total"] >= 1 and s["bpm"] == 128)
        assert st["prompt"] == "a glowing reef at night" and st["bpm"] == 128
        assert st["rejected"]["unknown_address"] == 1
        # a /dreamcam/ address still works on the same server
        scope.send_message("/dreamcam/strength", 0.3)
        assert settle(reply_sock, srv.port, lambda s: abs(s["strength"] - 0.3) < 1e-6)["strength"] == pytest.approx(0.3)
        # the other mode's addresses are not taken
        scope.send_message("/prompt", "td style")
        st = settle(reply_sock, srv.port, lambda s: s["rejected_total"] >= 2)
        assert st["prompt"] == "a glowing reef at night"
    finally:
        srv.close()


def test_touchdesigner_reports_reach_its_listener():
    """StreamDiffusionTD's component listens for /server_active, /stream-info/fps, ... : with
    --osc-feedback they go there once a second, made from dreamcam's status."""
    got: dict[str, list] = {}
    d = Dispatcher()
    def keep(address, *args):  # returns None: python-osc sends a handler's return value back as a reply
        got.setdefault(address, list(args))

    d.set_default_handler(keep)
    listener = BlockingOSCUDPServer((HOST, 0), d)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    srv, _ = serve("td", feedback=(HOST, listener.server_address[1]))
    try:
        deadline = time.monotonic() + 10
        want = {"/stream-info/fps", "/server_active", "/framecount", "/stream-info/state"}
        while not want <= got.keys() and time.monotonic() < deadline:  # separate datagrams, any order
            time.sleep(0.02)
        assert got["/stream-info/fps"] == [pytest.approx(24.5)]
        assert got["/server_active"] == [1]
        assert got["/framecount"] == [99]
        assert got["/stream-info/state"] == ["local_ready"]
    finally:
        srv.close()
        listener.shutdown()
        listener.server_close()


def test_td_reports_default_to_its_own_port():
    srv = OscServer(ParamStore(), port=0, compat=Compat("td"))
    assert srv.report_to == (HOST, 8248)
    assert OscServer(ParamStore(), port=0, compat=Compat("scope")).report_to is None  # Scope reports over HTTP


def test_alias_rows_only_for_knobs_the_table_has():
    """Each alias is a row onto the knob table; a knob another feature adds (feedback) makes its
    row live only when the table has it."""
    for rows in (TD_ALIASES, SCOPE_ALIASES):
        for a in rows:
            assert (a.address in Compat("td" if rows is TD_ALIASES else "scope").aliases) == (a.knob in PARAMS)
    with pytest.raises(ConfigError, match="--osc-compat takes"):
        Compat("resolume")


def test_docs_list_every_alias_and_every_unmapped_address():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "control.md").read_text()
    for a in TD_ALIASES + SCOPE_ALIASES:
        assert f"`{a.address}`" in text, a.address
    for rows in UNMAPPED.values():
        for addresses in rows:
            assert addresses.split(",")[0] in text, addresses
