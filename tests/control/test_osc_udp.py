"""The OSC server on a real UDP socket on 127.0.0.1: updates, status, bundles, fuzz, bursts,
allow list, feedback to a python-osc server, mapping, and the socket set-up on each platform."""

from __future__ import annotations

import json
import logging
import math
import random
import socket
import subprocess
import sys
import threading
import time

import pytest
from dreamcam.control.osc import server as osc
from dreamcam.control.osc.dispatch import build_message
from dreamcam.control.osc.maps import OscMapping
from dreamcam.control.osc.server import RCVBUF_ENOUGH, OscServer
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS, ParamStore
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer
from waiting import poll as wait_for

HOST = "127.0.0.1"


def msg(address: str, *args) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


@pytest.fixture
def client():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.settimeout(5.0)
    yield s
    s.close()


@pytest.fixture
def server():
    store = ParamStore()
    with OscServer(store, port=0, status=lambda: {"fps": 30.0, "latency_ms": 50.0, "dropped": 0}) as srv:
        yield srv


def test_prompt_strength_seed_over_udp(server, client):
    to = (HOST, server.port)
    client.sendto(msg("/dreamcam/prompt", "a red fox"), to)
    client.sendto(msg("/dreamcam/strength", 0.75), to)
    client.sendto(msg("/dreamcam/seed", 31337), to)
    assert wait_for(lambda: server.received == 3)
    s = server.store.snapshot()
    assert (s["prompt"], s["strength"], s["seed"]) == ("a red fox", 0.75, 31337)


def test_status_is_answered_to_the_sender(server, client):
    client.sendto(msg("/dreamcam/strength", 3.0), (HOST, server.port))
    client.sendto(msg("/dreamcam/status"), (HOST, server.port))
    data, sender = client.recvfrom(65535)
    assert sender == (HOST, server.port)
    reply = OscMessage(data)
    assert reply.address == "/dreamcam/state"
    state = json.loads(reply.params[0])
    assert set(PARAMS) <= set(state) and state["fps"] == 30.0 and state["presets"] == []
    assert state["rejected"]["out_of_range"] == 1


def test_bundle_over_udp(server, client):
    b = OscBundleBuilder(IMMEDIATELY)
    b.add_content(OscMessage(msg("/dreamcam/guidance", 4)))
    b.add_content(OscMessage(msg("/dreamcam/bypass", 1)))
    b.add_content(OscMessage(msg("/dreamcam/status")))
    client.sendto(b.build().dgram, (HOST, server.port))
    state = json.loads(OscMessage(client.recvfrom(65535)[0]).params[0])
    assert state["guidance"] == 4.0 and state["bypass"] is True


def malformed(rng: random.Random) -> bytes:
    """One datagram that must be rejected (never a valid update, never /dreamcam/status)."""
    kind = rng.randrange(9)
    if kind == 0:  # random bytes that do not start an OSC message or bundle
        return bytes([rng.choice([0, 1, 0x41, 0xFF])]) + rng.randbytes(rng.randrange(0, 200))
    if kind == 1:  # a valid message cut short
        whole = msg("/dreamcam/strength", 0.5)
        return whole[: rng.randrange(1, len(whole) - 1)]
    if kind == 2:  # wrong type tag
        return msg("/dreamcam/" + rng.choice(["strength", "guidance", "seed", "bypass"]), "zero")
    if kind == 3:
        return msg("/dreamcam/strength", rng.choice([math.nan, math.inf, -math.inf]))
    if kind == 4:
        return msg("/dreamcam/strength", rng.choice([1.0001, -0.5, 1e30, 2]))
    if kind == 5:  # huge prompt
        return msg("/dreamcam/prompt", "y" * rng.randrange(4097, 9000))
    if kind == 6:
        return msg("/dreamcam/preset", f"preset-{rng.randrange(1000)}")
    if kind == 7:
        return msg("/dreamcam/" + rng.choice(["load", "model", "exec", "file", "Strength"]), "/etc/passwd")
    return msg("/dreamcam/seed", rng.random() * 10, 1)  # wrong argument count


def test_fuzz_10000_malformed_datagrams_then_a_valid_update(server, client):
    rng = random.Random(1234)
    to = (HOST, server.port)
    before = server.store.snapshot()
    n = 10_000
    for i in range(n):
        client.sendto(malformed(rng), to)
        if i % 200 == 199:  # paced so that even a small kernel buffer loses nothing here
            assert wait_for(lambda n=i + 1: server.received == n), f"server stuck at {server.received}"
    assert server.store.snapshot() == before and server.store.take_changes() == {}
    client.sendto(msg("/dreamcam/strength", 0.125), to)
    assert wait_for(lambda: server.store.get("strength") == 0.125)
    assert server.received == n + 1 and server.applied == 1
    assert sum(server.rejected.values()) == n
    kinds = {k for k, v in server.rejected.items() if v}
    assert {
        "garbage",
        "bad_args",
        "not_finite",
        "out_of_range",
        "too_long",
        "unknown_preset",
        "unknown_address",
    } <= kinds
    client.sendto(msg("/dreamcam/status"), to)
    assert json.loads(OscMessage(client.recvfrom(65535)[0]).params[0])["rejected_total"] == n


SENDER = r"""
import socket, sys
from pythonosc.osc_message_builder import OscMessageBuilder
port, n = int(sys.argv[1]), int(sys.argv[2])
msgs = []
for i in range(n):
    b = OscMessageBuilder("/dreamcam/strength")
    b.add_arg((i % 1000) / 1000.0 if i < n - 1 else 0.875)
    msgs.append(b.build().dgram)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
for m in msgs:
    s.sendto(m, ("127.0.0.1", port))
"""


def test_burst_of_10000_from_another_process_loses_nothing(server):
    if server.rcvbuf < RCVBUF_ENOUGH:
        pytest.skip(f"kernel granted a {server.rcvbuf}-byte receive buffer; raise net.core.rmem_max to run this")
    n = 10_000
    proc = subprocess.Popen(
        [sys.executable, "-c", SENDER, str(server.port), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
        assert wait_for(lambda: server.received >= n, timeout_s=30), f"received {server.received} of {n}"
    finally:
        proc.kill()
    assert server.received == n and server.applied == n and sum(server.rejected.values()) == 0
    assert server.store.get("strength") == 0.875  # the last one wins


def test_allow_list_over_udp(client):
    store = ParamStore()
    with OscServer(store, port=0, allow=["10.9.8.7"]) as closed_door, OscServer(store, port=0, allow=[HOST]) as door:
        client.sendto(msg("/dreamcam/delta", 2.5), (HOST, closed_door.port))
        assert wait_for(lambda: closed_door.received == 1)
        assert closed_door.rejected["not_allowed"] == 1 and store.get("delta") == 1.0
        client.sendto(msg("/dreamcam/delta", 2.5), (HOST, door.port))
        assert wait_for(lambda: store.get("delta") == 2.5)


class Collector:
    """A python-osc server standing in for a controller's OSC input."""

    def __init__(self) -> None:
        self.got: list[tuple[str, object]] = []
        d = Dispatcher()
        d.set_default_handler(lambda address, *args: self.got.append((address, args[0] if args else None)))
        self.server = BlockingOSCUDPServer((HOST, 0), d)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def latest(self, address: str):
        values = [v for a, v in list(self.got) if a == address]
        return values[-1] if values else None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_feedback_keeps_a_controller_in_sync(client):
    fb = Collector()
    mapping = OscMapping.parse('[[bind]]\naddress = "/1/fader1"\nparam = "strength"\n')
    try:
        store = ParamStore()
        with OscServer(store, port=0, feedback=(HOST, fb.port), mapping=mapping) as srv:
            assert wait_for(lambda: fb.latest("/dreamcam/prompt") == PARAMS["prompt"].default)  # first: everything
            client.sendto(msg("/dreamcam/strength", 0.25), (HOST, srv.port))
            store.set("seed", 99)  # changes from other writers (OBS, presets) are pushed too
            assert wait_for(lambda: fb.latest("/dreamcam/seed") == 99)
            assert wait_for(lambda: fb.latest("/dreamcam/strength") == 0.25)
            assert wait_for(lambda: fb.latest("/1/fader1") == pytest.approx(0.25))
            store.set("bypass", True)
            assert wait_for(lambda: fb.latest("/dreamcam/bypass") == 1)
    finally:
        fb.close()


def test_mapping_over_udp(client, tmp_path):
    path = tmp_path / "map.toml"
    path.write_text('[[bind]]\naddress = "/1/fader1"\nparam = "strength"\ninput = [0, 127]\n')
    store = ParamStore()
    with OscServer(store, port=0, mapping=OscMapping.load(path)) as srv:
        client.sendto(msg("/1/fader1", 127), (HOST, srv.port))
        assert wait_for(lambda: store.get("strength") == 1.0)


def test_lifecycle(server):
    port = server.port
    with pytest.raises(ConfigError, match=f"cannot listen for OSC on 127.0.0.1:{port}.*another --osc-port"):
        OscServer(ParamStore(), port=port).start()
    assert server.start() is server  # start twice: no second socket
    server.close()
    server.close()
    with pytest.raises(RuntimeError, match="closed"):
        server.start()
    assert not any(t.name.startswith("dreamcam-osc") for t in threading.enumerate())


@pytest.mark.parametrize("allow,says", [("any", "use --osc-allow to limit senders"), ("127.0.0.1", "only 127.0.0.1 may steer")])
def test_listening_beyond_this_machine_warns_with_what_applies(allow, says, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="dreamcam.control.osc.server"):
        with OscServer(ParamStore(), host="0.0.0.0", port=0, allow=allow):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and says in warnings[0], warnings


# The socket set-up where platforms differ: the receive-buffer advice names each OS's setting,
# and "localhost" is listened on over IPv4 where the resolver prefers IPv6.
def _warning_for(monkeypatch, caplog, platform: str) -> str:
    # a receive buffer below what a burst needs (forced here: as root this Linux grants 16 MiB)
    monkeypatch.setattr(osc, "RCVBUF_ENOUGH", 1 << 40)
    monkeypatch.setattr(sys, "platform", platform)
    with caplog.at_level(logging.WARNING, logger="dreamcam.control.osc.server"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        osc._grow_rcvbuf(s, osc.RCVBUF_BYTES)
    return " ".join(r.getMessage() for r in caplog.records)


def test_small_receive_buffer_on_macos_names_the_macos_setting(monkeypatch, caplog):
    msg = _warning_for(monkeypatch, caplog, "darwin")
    assert "sudo sysctl -w kern.ipc.maxsockbuf=33554432" in msg
    assert "rmem_max" not in msg


def test_small_receive_buffer_on_linux_names_rmem_max(monkeypatch, caplog):
    assert "sudo sysctl -w net.core.rmem_max=16777216" in _warning_for(monkeypatch, caplog, "linux")


def test_osc_host_localhost_listens_on_ipv4_where_the_resolver_prefers_ipv6(monkeypatch):
    # Windows' and macOS's resolvers give ::1 first for "localhost" (this Linux gives 127.0.0.1):
    # stood in for by a resolver that answers "localhost" that way; the server and the sender are real
    real = socket.getaddrinfo

    def resolver(host, *args, **kw):
        if host == "localhost":
            return [(socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("::1", args[0], 0, 0))] + real("127.0.0.1", *args, **kw)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    store = ParamStore()
    with osc.OscServer(store, host="localhost", port=0) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(build_message("/dreamcam/strength", 0.25), ("127.0.0.1", server.port))
        deadline = time.monotonic() + 2.0
        while store.get("strength") != 0.25 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert store.get("strength") == 0.25
