"""When the engine, not the source, sets the live loop's pace, `dreamcam run` says so once and names
the flags that help (dreamcam/runtime/pace.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dreamcam.engine.stream import StreamEngine
from dreamcam.runtime.pace import PaceWatch, advice, engine_bound, tee

ROOT = Path(__file__).resolve().parents[2]

ENGINE_BOUND = {"fps": 20.0, "input_fps": 30.0, "bypass": False, "signal_lost": False}
SOURCE_BOUND = {"fps": 30.0, "input_fps": 30.0, "bypass": False, "signal_lost": False}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def watch(after_s=5.0):
    said, clock = [], Clock()
    w = PaceWatch(said.append, lambda: "ADVICE", after_s=after_s, clock=clock)
    return w, said, clock


def feed(w, clock, st, seconds, every=0.5):
    for _ in range(round(seconds / every)):
        w(st)
        clock.t += every


def test_said_once_after_the_engine_set_the_pace_for_five_seconds():
    w, said, clock = watch()
    feed(w, clock, ENGINE_BOUND, 4.5)
    assert said == []  # 4.5 s of status, 4.0 s since the first engine-bound one
    feed(w, clock, ENGINE_BOUND, 1.5)
    assert len(said) == 1
    assert said[0].startswith("the engine sets the pace (20 fps out of 30 fps in; the rest are dropped)")
    assert said[0].endswith("For more fps: ADVICE")
    feed(w, clock, ENGINE_BOUND, 60)
    assert len(said) == 1  # once a run


@pytest.mark.parametrize("gap", [
    SOURCE_BOUND,  # the source set the pace for a moment
    {**ENGINE_BOUND, "bypass": True},  # the model did not run
    {**ENGINE_BOUND, "signal_lost": True},  # the camera went away
    {**ENGINE_BOUND, "fps": 0.0},  # nothing out yet (a start)
    {"fps": 29.0, "input_fps": 30.0},  # within 10%: the source's own jitter
])
def test_a_break_starts_the_count_again(gap):
    w, said, clock = watch()
    feed(w, clock, ENGINE_BOUND, 4.0)
    feed(w, clock, gap, 0.5)
    feed(w, clock, ENGINE_BOUND, 4.5)
    assert said == []
    feed(w, clock, ENGINE_BOUND, 1.0)
    assert len(said) == 1


def test_a_source_bound_run_hears_nothing():
    w, said, clock = watch()
    feed(w, clock, SOURCE_BOUND, 120)
    assert said == [] and w.said is None


def test_engine_bound_needs_both_rates_and_more_than_jitter():
    assert engine_bound(30.0, 20.0) and engine_bound(480.0, 178.0)
    assert not engine_bound(30.0, 29.0)  # within 10%: the source's own jitter
    assert not engine_bound(30.0, 0.0) and not engine_bound(0.0, 20.0)  # a start or a stop


def test_tee_calls_each_callback_in_turn():
    calls = []
    tee(lambda st: calls.append(("a", st)), lambda st: calls.append(("b", st)))({"fps": 1})
    assert calls == [("a", {"fps": 1}), ("b", {"fps": 1})]


def _engine(pipe, t_index=(35,), cfg="none", size=64):
    return StreamEngine(pipe, list(t_index), size, size, cfg_type=cfg, device="cpu")


# The compiled backend needs CUDA, so it cannot be built here: a stand-in with its name and knobs
# (what `advice` reads of it) takes its place; the engines are real.
def _compiled(**knobs):
    return SimpleNamespace(name="compiled", knobs={"parallel_frames": False, "overlap_stages": False, **knobs})


def test_compiled_with_frames_that_carry_no_state_is_pointed_to_parallel_frames(tiny_pipe):
    a = advice(_compiled(), _engine(tiny_pipe))
    assert a.startswith("--parallel-frames --fuse-qkv runs the two frames in flight side by side")
    assert "about a sixth more frames a second on a fast GPU" in a and "a smaller --width/--height (now 64x64)" in a
    assert "H200" not in a and "178" not in a  # what it buys in a user's terms, not which run measured it
    assert "--steps" not in a  # one step already


def test_compiled_with_residual_cfg_at_one_step_is_pointed_to_overlap_stages(tiny_pipe):
    a = advice(_compiled(), _engine(tiny_pipe, cfg="self"))
    assert a.startswith("--overlap-stages --fuse-qkv") and "--parallel-frames would need --cfg none or full" in a


def test_compiled_with_several_steps_is_told_fewer_steps_or_a_smaller_size(tiny_pipe):
    a = advice(_compiled(), _engine(tiny_pipe, t_index=(0, 16, 32, 45), cfg="self"))
    assert a == "a smaller --width/--height (now 64x64) or fewer --steps (now 4)"


@pytest.mark.parametrize("knob", ["parallel_frames", "overlap_stages"])
def test_a_throughput_mode_already_on_is_not_suggested_again(tiny_pipe, knob):
    assert advice(_compiled(**{knob: True}), _engine(tiny_pipe)) == "a smaller --width/--height (now 64x64)"


def test_eager_on_a_cpu_gets_the_size_and_steps(tiny_pipe):
    from dreamcam.backends.eager import EagerBackend

    e = _engine(tiny_pipe, t_index=(32, 45))
    assert advice(EagerBackend(e), e) == "a smaller --width/--height (now 64x64) or fewer --steps (now 2)"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_the_real_compiled_backend_gets_the_advice_its_knobs_call_for():
    """The stand-in above, checked against the real backend: what `advice` reads of it on a GPU."""
    from dreamcam import tiny_pipeline
    from dreamcam.backends import make_backend

    pipe = tiny_pipeline(0, device="cuda", dtype=torch.float16)

    def engine(cfg="none"):
        e = StreamEngine(pipe, [35], 64, 64, cfg_type=cfg, device="cuda", dtype=torch.float16)
        e.prepare("a cat", seed=3)
        return e

    for cfg, knobs, starts in [("none", {}, "--parallel-frames --fuse-qkv"), ("self", {}, "--overlap-stages"),
                               ("none", {"parallel_frames": True}, "a smaller"),
                               ("none", {"overlap_stages": True}, "a smaller")]:
        e = engine(cfg)
        with make_backend("compiled", e, compile=False, **knobs) as b:
            assert advice(b, e).startswith(starts), (cfg, knobs, advice(b, e))


def test_dreamcam_run_says_it_when_the_cpu_engine_falls_behind_the_test_pattern():
    """A real run: the tiny model at 512x512 on this CPU (about 5 fps) behind a 30 fps test pattern."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--source", "testpattern", "--sink", "null",
         "--no-osc", "--width", "512", "--height", "512"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )
    lines, deadline = [], time.monotonic() + 120
    try:
        for line in p.stderr:
            lines.append(line)
            if "the engine sets the pace" in line or time.monotonic() > deadline:
                break
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    hint = [x for x in lines if "the engine sets the pace" in x]
    assert len(hint) == 1, "".join(lines)
    assert hint[0].startswith("dreamcam: the engine sets the pace (")
    assert "For more fps: a smaller --width/--height (now 512x512)" in hint[0]


def test_eager_on_a_gpu_is_pointed_to_the_compiled_backend(tiny_pipe):
    """The engine's device is all `advice` reads of it here; a CPU engine claims CUDA for it."""
    from dreamcam.backends.eager import EagerBackend

    e = _engine(tiny_pipe)
    backend = EagerBackend(e)
    e.device = torch.device("cuda")
    assert advice(backend, e).startswith("--backend compiled is several times as fast as eager on a GPU")
