"""Bundles follow the OSC 1.0 rule: their messages take effect together (all valid or none
applied, whatever makes one invalid), and the depth limit is exact (8 levels, not 9)."""

from __future__ import annotations

import pytest
from dreamcam.control.osc.dispatch import OscDispatcher
from dreamcam.control.osc.maps import MAX_BUNDLE_DEPTH
from dreamcam.knobs import ParamStore
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

ME = ("127.0.0.1", 50000)


def msg(address: str, *args) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def nested(levels: int) -> bytes:
    """A seed update inside `levels` bundles, each holding the next."""
    content = OscMessage(msg("/dreamcam/seed", 5))
    for _ in range(levels):
        b = OscBundleBuilder(IMMEDIATELY)
        b.add_content(content)
        content = b.build()
    return content.dgram


def test_depth_limit_is_exact():
    assert MAX_BUNDLE_DEPTH == 8
    ok = OscDispatcher(ParamStore())
    ok.handle_datagram(nested(MAX_BUNDLE_DEPTH), ME)
    assert ok.store.get("seed") == 5 and ok.applied == 1
    deep = OscDispatcher(ParamStore())
    deep.handle_datagram(nested(MAX_BUNDLE_DEPTH + 1), ME)
    assert deep.store.take_changes() == {} and deep.rejected["garbage"] == 1


@pytest.mark.parametrize("bad, kind", [
    (msg("/dreamcam/strength", float("nan")), "not_finite"),
    (msg("/dreamcam/strength", 7.0), "out_of_range"),
    (msg("/dreamcam/nothing", 1.0), "unknown_address"),
    (msg("/dreamcam/seed", "x"), "bad_args"),
])
def test_one_invalid_message_drops_the_whole_bundle(bad, kind):
    d = OscDispatcher(ParamStore())
    b = OscBundleBuilder(IMMEDIATELY)
    for m in (msg("/dreamcam/prompt", "a fox"), bad, msg("/dreamcam/transition", 2.0)):
        b.add_content(OscMessage(m))
    d.handle_datagram(b.build().dgram, ME)
    assert d.store.take_changes() == {}
    assert d.rejected[kind] == 1 and d.applied == 0
