"""A flood of junk on a real loopback socket does not hold up control: a valid update sent right
after 20,000 junk datagrams is not lost and lands at once (before: 0.7 to 3.2 s, about 6,000 a second).

The 100 ms target itself is a speed figure, measured by `dreamcam bench --osc` on a quiet machine
(docs/control.md); this test bounds it at 400 ms, which the old server missed by far, so that a test
run sharing two cores with other work does not fail on scheduling alone."""

from __future__ import annotations

import pytest
from dreamcam.bench.osc import FLOOD_KINDS, osc_flood


@pytest.mark.parametrize("kind", list(FLOOD_KINDS))
def test_a_valid_update_lands_at_once_after_a_flood(kind, monkeypatch):
    monkeypatch.setattr("dreamcam.bench.osc.FLOOD_KINDS", {kind: FLOOD_KINDS[kind]})
    out = osc_flood(20_000)
    assert out[f"flood_{kind}_lost"] == 0, out
    assert out[f"flood_{kind}_valid_ms"] < 400, out
