"""The flicker meter on frames made here (no model): what reads high and what reads low, why the
warp matters, and that its thread never holds up the loop (a slow meter drops samples)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from dreamcam.bench.clips import ClipSpec, clip_frames, scene, sensor_noise
from dreamcam.runtime.flicker import CUT_GREY, FlickerMeter, FlowWarp, measure_pair, measure_size

SIZE = 128


def still_with_noise(n: int, noise: float = 4.0, seed: int = 0) -> list[np.ndarray]:
    return list(clip_frames(ClipSpec(SIZE, SIZE, fps=10, still_s=n / 10, after_s=0, noise=noise, seed=seed)))


def measure(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> tuple[float, float]:
    """Mean output and input warping error over consecutive pairs, through the meter's thread."""
    with FlickerMeter(SIZE, SIZE, rate=None) as meter:
        for k, (i, o) in enumerate(zip(inputs, outputs)):
            meter.add(i, o, k)
            assert meter.flush(10.0)  # every pair measured: this test is about the figure, not the drops
        s = meter.summary()
    assert s["flicker_samples"] == len(inputs) - 1 and s["flicker_cuts"] == 0, s
    return s["flicker"], s["flicker_rel"]


def test_a_still_input_with_a_flickering_output_reads_high_and_a_stable_one_low():
    inputs = still_with_noise(8)
    rng = np.random.default_rng(1)
    # an img2img model that boils: every frame a picture of the scene with fresh texture on top
    boiling = [sensor_noise(scene(SIZE, SIZE, 7), 25.0, rng) for _ in inputs]
    steady = [cv2.GaussianBlur(scene(SIZE, SIZE, 7), (5, 5), 0).astype(np.uint8)] * len(inputs)
    high, high_rel = measure(inputs, boiling)
    low, low_rel = measure(inputs, steady)
    assert high > 15 and high_rel > 4, (high, high_rel)  # 25-sigma noise: about 28 grey levels apart
    assert low < 0.5 and low_rel < 0.2, (low, low_rel)
    # the input's own error is the camera noise (sigma 4 at mid grey): a few grey levels, so the
    # relative figure of an output that merely passes the camera through is 1
    passthrough, rel = measure(inputs, inputs)
    assert 1.5 < passthrough < 6 and rel == pytest.approx(1.0), (passthrough, rel)


def test_an_output_that_follows_the_motion_reads_low_because_the_previous_one_is_warped():
    spec = ClipSpec(SIZE, SIZE, fps=10, still_s=0.8, after_s=0, noise=2.0, pan=8.0, seed=3)
    inputs = list(clip_frames(spec))
    # a restyled picture that moves with the camera (colours inverted, noise smoothed away)
    follows = [255 - cv2.GaussianBlur(f, (3, 3), 0) for f in inputs]
    stuck = [follows[0]] * len(inputs)  # an output that ignores the motion
    low, low_rel = measure(inputs, follows)
    high, _ = measure(inputs, stuck)
    assert low < 2.5 and low_rel < 1.0, (low, low_rel)
    assert high > 5 * low, (high, low)
    # without the warp the moving output would read as flicker: the plain frame difference is large
    plain = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(follows, follows[1:])])
    assert plain > 5 * low, (plain, low)


def test_a_still_noisy_camera_adds_no_floor_to_a_steady_output():
    """The still rule: on a still camera with heavy sensor noise DIS flow is sub-pixel noise, and
    warping a detailed output along it would read as flicker the output does not have. The
    output here is steady detail the input does not show (what a model draws) plus a known
    flicker; the meter must read the output's own frame-to-frame change, nothing more."""
    inputs = still_with_noise(10, noise=8.0)
    rng = np.random.default_rng(5)
    detail = cv2.resize(rng.uniform(0, 255, (SIZE // 4, SIZE // 4, 3)).astype(np.float32), (SIZE, SIZE))
    steady = [np.clip(detail, 0, 255).astype(np.uint8)] * len(inputs)
    assert measure(inputs, steady)[0] < 0.02  # before the rule: the flow noise read 1.9-3.4 grey levels here
    trembling = [sensor_noise(detail, 1.0, rng) for _ in inputs]  # a steady model's residue
    truth = np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(trembling, trembling[1:])])
    flicker, rel = measure(inputs, trembling)
    assert flicker == pytest.approx(truth, rel=0.03), (flicker, truth)
    assert rel < 0.2  # the camera's own change is the noise: about 9 grey levels


def test_real_motion_is_not_taken_for_still():
    """A pan of a whole pixel a frame through the same heavy noise: the rule leaves the flow alone,
    and the figure agrees with the exact warp (the clip moves the view by whole pixels)."""
    pan = 1
    spec = ClipSpec(SIZE, SIZE, fps=10, still_s=0.8, after_s=0, noise=8.0, pan=float(pan), seed=4)
    inputs = list(clip_frames(spec))
    rng = np.random.default_rng(6)
    clean = clip_frames(ClipSpec(SIZE, SIZE, fps=10, still_s=0.8, after_s=0, noise=0.0, pan=float(pan), seed=4))
    follows = [sensor_noise(255.0 - f, 1.0, rng) for f in clean]  # a restyle that moves with the scene
    # the view moves right, so frame k at x shows what frame k-1 showed at x + pan
    exact = np.mean([np.abs(b[:, :-pan].astype(float) - a[:, pan:]).mean() for a, b in zip(follows, follows[1:])])
    flicker, _ = measure(inputs, follows)
    assert flicker == pytest.approx(exact, rel=0.25), (flicker, exact)
    still = measure(inputs, [follows[0]] * len(inputs))[0]  # an output stuck while the camera pans
    assert still > 1.5 * flicker, (still, flicker)
    warp = FlowWarp()
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in inputs[:2]]
    w = warp.between(*grey)
    moved = np.hypot(*(w.map - np.dstack(np.meshgrid(np.arange(SIZE), np.arange(SIZE)))).transpose(2, 0, 1))
    assert np.mean(moved > 0.5) > 0.9  # the warp follows the pan almost everywhere


def test_a_cut_is_counted_not_measured_and_the_clip_has_one_where_it_says():
    spec = ClipSpec(SIZE, SIZE, fps=10, still_s=0.5, after_s=0.4, noise=4.0)
    frames = list(clip_frames(spec))
    warp = FlowWarp()
    errors = [measure_pair(warp, a, b, a, b)[1] for a, b in zip(frames, frames[1:])]
    cut = spec.cut_at - 1  # pair (cut_at - 1, cut_at)
    assert errors[cut] > CUT_GREY and max(e for i, e in enumerate(errors) if i != cut) < CUT_GREY / 3, errors
    with FlickerMeter(SIZE, SIZE, rate=None) as meter:
        for k, f in enumerate(frames):
            meter.add(f, f, k)
            meter.flush(10.0)
        s = meter.summary()
    assert s["flicker_cuts"] == 1 and s["flicker_samples"] == len(frames) - 2


def test_no_figure_before_the_first_pair_and_none_after_a_reset():
    frames = still_with_noise(3)
    with FlickerMeter(SIZE, SIZE, rate=None) as meter:
        assert meter.reading() == (None, None) and meter.summary()["flicker"] is None
        meter.add(frames[0], frames[0], 0)
        meter.flush(10.0)
        assert meter.reading() == (None, None)  # one frame is no pair
        meter.add(frames[1], frames[1], 1)
        meter.flush(10.0)
        flicker, rel = meter.reading()
        assert flicker is not None and flicker > 0 and rel == pytest.approx(1.0)
        meter.gap(reset=True)  # bypass: no figure while it lasts, no pair across it
        assert meter.reading() == (None, None)
        meter.add(frames[2], frames[2], 2)
        meter.flush(10.0)
        assert meter.reading() == (None, None) and meter.offered == 1
    assert meter.summary()["flicker"] == pytest.approx(flicker, abs=0.01)  # the run's figure keeps what was measured


class HeldMeter(FlickerMeter):
    """A meter whose measurement waits until the test lets it go: the slowest meter there is."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.entered, self.release = threading.Event(), threading.Event()
        self.measured: list[int] = []

    def _measure(self, warp, gen, prev, cur):
        self.entered.set()
        self.release.wait(30)
        self.measured.append(cur[2])
        super()._measure(warp, gen, prev, cur)


def test_a_slow_meter_drops_samples_and_never_holds_up_the_loop():
    frames = still_with_noise(2)
    with HeldMeter(SIZE, SIZE, rate=None) as meter:
        meter.add(frames[0], frames[0], 0)
        meter.add(frames[1], frames[1], 1)  # pair (0, 1): the thread takes it and is held
        assert meter.entered.wait(10)

        def loop():  # 50 more frames while the meter is stuck on its first pair
            for k in range(2, 52):
                meter.add(frames[k % 2], frames[k % 2], k)

        t = threading.Thread(target=loop)
        t.start()
        t.join(20)
        assert not t.is_alive(), "add() waited for the meter"
        assert meter.offered == 51 and meter.dropped == 49  # one being measured, one waiting: the newest
        meter.release.set()
        assert meter.flush(10.0)
    assert meter.measured == [1, 51]  # the pair in hand, then the newest; nothing queued in between
    assert meter.summary()["flicker_dropped"] == 49


def test_the_rate_limits_the_pairs_handed_over():
    frames = still_with_noise(2)
    with FlickerMeter(SIZE, SIZE, rate=0.001) as meter:  # one sample, then none for 1000 s
        for k in range(20):
            meter.add(frames[k % 2], frames[k % 2], k)
        assert meter.offered == 1
    with pytest.raises(ValueError, match="rate"):
        FlickerMeter(SIZE, SIZE, rate=0)


def test_measure_size_keeps_the_aspect_and_never_enlarges():
    assert measure_size(512, 512) == (256, 256)
    assert measure_size(768, 448) == (256, 149)
    assert measure_size(64, 64) == (64, 64)


def test_flush_waits_for_a_pair_the_thread_has_taken_but_not_started_on():
    # The run's summary flushes the meter, then counts the pairs. A thread descheduled between
    # taking the last pair and measuring it (seen under CI load: 3 of 4 pairs counted) must not
    # read as "nothing left to do". The hand-over's get() is slowed here to hold that moment open.
    frames = still_with_noise(2)
    meter = FlickerMeter(SIZE, SIZE, rate=None)
    taken = threading.Event()
    get = meter._slot.get

    def get_then_stall(timeout=None):
        item = get(timeout)
        if item is not None:
            taken.set()
            threading.Event().wait(0.5)
        return item

    meter._slot.get = get_then_stall  # before the thread starts, so every get it makes is this one
    with meter:
        meter.add(frames[0], frames[0], 0)
        meter.add(frames[1], frames[1], 1)
        assert taken.wait(10)
        assert meter.flush(10.0)
        s = meter.summary()
    assert s["flicker_samples"] + s["flicker_cuts"] == 1 and s["flicker_errors"] == 0, s


def test_a_pair_the_measurement_fails_on_is_counted_and_the_meter_goes_on(monkeypatch):
    frames = still_with_noise(3)
    calls = []
    real = FlickerMeter._measure

    def fail_first(self, *a):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("flow failed")
        return real(self, *a)

    monkeypatch.setattr(FlickerMeter, "_measure", fail_first)
    with FlickerMeter(SIZE, SIZE, rate=None) as meter:
        for k in range(3):
            meter.add(frames[k], frames[k], k)
            assert meter.flush(10.0)
        s = meter.summary()
    assert s["flicker_errors"] == 1 and s["flicker_samples"] + s["flicker_cuts"] == 1, s
