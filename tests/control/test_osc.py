"""OSC dispatch without a socket: every address, every kind of rejection, bundles, presets, status."""

from __future__ import annotations

import json
import logging
import math

import pytest
from dreamcam.errors import ConfigError
from dreamcam.control.osc.server import DEFAULT_PORT, OscServer, listen_address
from dreamcam.control.osc.dispatch import REJECT_KINDS, addresses
from dreamcam.knobs import PARAMS, ParamStore
from dreamcam.control.presets import PresetLibrary
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

ME = ("127.0.0.1", 50000)


def msg(address: str, *args, types: str | None = None) -> bytes:
    b = OscMessageBuilder(address)
    for i, a in enumerate(args):
        b.add_arg(a, types[i] if types else None)
    return b.build().dgram


def bundle(*dgrams: bytes) -> bytes:
    b = OscBundleBuilder(IMMEDIATELY)
    for d in dgrams:
        b.add_content(OscMessage(d))
    return b.build().dgram


@pytest.fixture
def presets(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text('[ink]\nprompt = "an ink drawing"\nstrength = 0.7\ntransition = 0\n\n[calm]\nguidance = 3\n')
    return PresetLibrary(path)


@pytest.fixture
def server(presets):
    store = ParamStore()
    return OscServer(store, port=0, presets=presets, status=lambda: {"fps": 29.5, "latency_ms": 41.0, "dropped": 3})


def test_address_table_derives_from_params():
    assert addresses() == [f"/dreamcam/{n}" for n in PARAMS] + ["/dreamcam/tap", "/dreamcam/status", "/dreamcam/knobs", "/dreamcam/presets"]
    assert DEFAULT_PORT == 9000


@pytest.mark.parametrize(
    "address, args, types, name, expected",
    [
        ("/dreamcam/prompt", ["a dog"], None, "prompt", "a dog"),
        ("/dreamcam/negative_prompt", ["blurry"], None, "negative_prompt", "blurry"),
        ("/dreamcam/strength", [0.25], None, "strength", 0.25),
        ("/dreamcam/strength", [1], None, "strength", 1.0),  # int where a float is expected
        ("/dreamcam/strength", [0.5], "d", "strength", 0.5),  # double
        ("/dreamcam/guidance", [7], None, "guidance", 7.0),
        ("/dreamcam/delta", [0.5], None, "delta", 0.5),
        ("/dreamcam/seed", [123456], None, "seed", 123456),
        ("/dreamcam/seed", [42.0], None, "seed", 42),  # whole-valued float
        ("/dreamcam/transition", [2], None, "transition", 2.0),
        ("/dreamcam/bypass", [1], None, "bypass", True),
        ("/dreamcam/bypass", [True], None, "bypass", True),
        ("/dreamcam/bypass", [1.0], None, "bypass", True),
    ],
)
def test_each_address_sets_the_store(server, address, args, types, name, expected):
    assert server.handle_datagram(msg(address, *args, types=types), ME) == []
    value = server.store.get(name)
    assert value == expected and type(value) is type(expected)
    assert sum(server.rejected.values()) == 0 and server.applied == 1


BAD = [
    ("garbage", b"\x00\x01garbage"),
    ("garbage", b""),
    ("garbage", msg("/dreamcam/strength", 0.5)[:-2]),  # truncated argument
    ("unknown_address", msg("/dreamcam/model", "stabilityai/sd-turbo")),
    ("unknown_address", msg("/dreamcam/presets_file", "/etc/passwd")),
    ("unknown_address", msg("/1/fader1", 0.5)),  # no mapping file
    ("bad_args", msg("/dreamcam/strength", "0.5")),
    ("bad_args", msg("/dreamcam/strength", 0.5, 0.6)),
    ("bad_args", msg("/dreamcam/strength")),
    ("bad_args", msg("/dreamcam/prompt", 5)),
    ("bad_args", msg("/dreamcam/prompt", b"blob")),
    ("bad_args", msg("/dreamcam/seed", 1.5)),
    ("bad_args", msg("/dreamcam/status", 1)),
    ("bad_args", msg("/dreamcam/preset", 1)),
    ("not_finite", msg("/dreamcam/strength", math.nan)),
    ("not_finite", msg("/dreamcam/guidance", math.inf, types="d")),
    ("out_of_range", msg("/dreamcam/strength", 1.5)),
    ("out_of_range", msg("/dreamcam/strength", -0.01)),
    ("out_of_range", msg("/dreamcam/seed", -1)),
    ("out_of_range", msg("/dreamcam/transition", 61)),
    ("out_of_range", msg("/dreamcam/bypass", 2)),
    ("too_long", msg("/dreamcam/prompt", "x" * 4097)),
    ("too_long", msg("/dreamcam/negative_prompt", "x" * 4097)),
    ("bad_prompt", msg("/dreamcam/prompt", "a:0 | b:0")),
    ("unknown_preset", msg("/dreamcam/preset", "nope")),
    ("unknown_preset", msg("/dreamcam/preset", "../../presets.toml")),
]


@pytest.mark.parametrize("kind, dgram", BAD, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD)])
def test_bad_input_changes_nothing_and_is_counted(server, kind, dgram):
    before = server.store.snapshot()
    assert server.handle_datagram(dgram, ME) == []
    assert server.store.snapshot() == before and server.store.take_changes() == {}
    assert server.rejected[kind] == 1 and sum(server.rejected.values()) == 1


def test_prompt_at_the_limit_is_accepted(server):
    server.handle_datagram(msg("/dreamcam/prompt", "x" * 4096), ME)
    assert server.store.get("prompt") == "x" * 4096


def test_each_kind_logged_once(server, caplog):
    with caplog.at_level(logging.WARNING, logger="dreamcam.control.osc.server"):
        for _ in range(3):
            for _, dgram in BAD:
                server.handle_datagram(dgram, ME)
    lines = [r.getMessage() for r in caplog.records]
    kinds = {k for k, _ in BAD}
    assert len(lines) == len(kinds)
    assert all(any(f"({k})" in line for line in lines) for k in kinds)
    assert sum(server.rejected.values()) == 3 * len(BAD)


def test_allow_list(presets):
    store = ParamStore()
    srv = OscServer(store, port=0, allow="10.0.0.5, 127.0.0.1")
    srv.handle_datagram(msg("/dreamcam/strength", 0.9), ("10.0.0.6", 1234))
    assert store.get("strength") == PARAMS["strength"].default and srv.rejected["not_allowed"] == 1
    srv.handle_datagram(msg("/dreamcam/strength", 0.9), ("10.0.0.5", 1234))
    assert store.get("strength") == pytest.approx(0.9)  # OSC f is float32
    with pytest.raises(ConfigError, match="--osc-allow takes IP addresses"):
        OscServer(store, allow=["my-laptop"])


def test_bundle_is_one_store_update_and_a_bad_part_drops_it_all(server):
    seen = []
    server.store.subscribe(lambda name, value: seen.append(server.store.snapshot()["transition"]))
    server.handle_datagram(bundle(msg("/dreamcam/transition", 3.0), msg("/dreamcam/prompt", "a fox")), ME)
    assert server.store.take_changes() == {"transition": 3.0, "prompt": "a fox"}
    assert seen == [3.0, 3.0]  # listeners saw prompt and transition already together
    dgram = bundle(
        msg("/dreamcam/transition", 1.0),
        msg("/dreamcam/strength", 7.0),  # out of range: the whole bundle is dropped (OSC 1.0: together)
        msg("/dreamcam/prompt", "a cat"),
    )
    server.handle_datagram(dgram, ME)
    assert server.store.take_changes() == {}
    assert server.rejected["out_of_range"] == 1 and server.applied == 2


def test_nested_bundle(server):
    inner = OscBundleBuilder(IMMEDIATELY)
    inner.add_content(OscMessage(msg("/dreamcam/seed", 5)))
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(inner.build())
    outer.add_content(OscMessage(msg("/dreamcam/delta", 2.0)))
    server.handle_datagram(outer.build().dgram, ME)
    assert (server.store.get("seed"), server.store.get("delta")) == (5, 2.0)


def test_preset_by_name(server):
    server.handle_datagram(msg("/dreamcam/preset", "ink"), ME)
    changes = server.store.take_changes()
    assert changes == {"prompt": "an ink drawing", "strength": 0.7, "transition": 0.0, "preset": "ink"}


def test_preset_without_library_is_rejected():
    srv = OscServer(ParamStore(), port=0)
    srv.handle_datagram(msg("/dreamcam/preset", "ink"), ME)
    assert srv.rejected["unknown_preset"] == 1


def test_status_reply_has_params_presets_stats_and_counts(server):
    server.handle_datagram(msg("/dreamcam/strength", 9.0), ME)
    server.handle_datagram(b"junk", ME)
    replies = server.handle_datagram(msg("/dreamcam/status"), ME)
    assert len(replies) == 1
    reply = OscMessage(replies[0])
    assert reply.address == "/dreamcam/state" and len(reply.params) == 1
    state = json.loads(reply.params[0])
    assert set(PARAMS) <= set(state)
    assert state["presets"] == ["ink", "calm"]
    assert (state["fps"], state["latency_ms"], state["dropped"]) == (29.5, 41.0, 3)
    assert state["rejected"]["out_of_range"] == 1 and state["rejected"]["garbage"] == 1
    assert set(state["rejected"]) == set(REJECT_KINDS) and state["rejected_total"] == 2
    assert state["received"] == 3


def test_status_survives_a_failing_stats_callback():
    def broken():
        raise RuntimeError("stats not ready")

    srv = OscServer(ParamStore(), port=0, status=broken)
    state = json.loads(OscMessage(srv.handle_datagram(msg("/dreamcam/status"), ME)[0]).params[0])
    assert state["prompt"] == PARAMS["prompt"].default and "fps" not in state


def test_arguments_are_checked():
    with pytest.raises(ConfigError, match="--osc-port"):
        OscServer(ParamStore(), port=70000)
    with pytest.raises(ConfigError, match="--osc-feedback takes HOST:PORT"):
        OscServer(ParamStore(), feedback="127.0.0.1")
    assert OscServer(ParamStore(), feedback="127.0.0.1:9001").feedback == ("127.0.0.1", 9001)
    assert listen_address("127.0.0.1", 0)[2] and listen_address("localhost", 0)[2]
    assert not listen_address("192.0.2.1", 0)[2]  # documentation range: never bound here
    with pytest.raises(ConfigError, match="--osc-host"):
        listen_address("no-such-host.invalid", 0)


def test_packet_check_accepts_what_python_osc_builds_and_nothing_cut_short():
    from dreamcam.control.osc.maps import check_packet

    messages = [msg("/a", 1, 2.5, "text", b"blob!", True, False, None), msg("/a", 0.5, types="d"), msg("/a")]
    b = bundle(msg("/a", 1), msg("/b", "x"))
    for dgram in [*messages, b]:
        check_packet(dgram)
    cuts = [(m, range(8, len(m), 4)) for m in messages]  # anything after the address "/a\0\0"
    cuts.append((b, [c for c in range(4, len(b), 4) if c not in (16, 32)]))  # not at element boundaries
    for dgram, where in cuts:
        for cut in where:
            with pytest.raises(ValueError):
                check_packet(dgram[:cut])
    for bad, why in [
        (b"/a\0\0,x\0\0\0\0\0\0", "type tag 'x'"),
        (b"/a\0\0,i\0\0\0\0\0\0\0\0\0\0", "take 12 bytes, the message has 16"),
        (b"a\0\0\0", "neither a message"),
        (b"#bundle\0", "shorter than its header"),
    ]:
        with pytest.raises(ValueError, match=why):
            check_packet(bad)
