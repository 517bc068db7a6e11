"""`dreamcam bench`: --frame-buffer (fps counts frames, not calls) and the compiled backend's
knob flags (passed to its constructor; refused with one line on other backends)."""

import argparse
import inspect
import json

import numpy as np
import pytest
import torch

from dreamcam.bench import engine as bench
from dreamcam.backends.compiled.backend import CompiledBackend
from dreamcam.backends.eager import EagerBackend
from dreamcam.bench.peer import PeerRunner
from dreamcam.errors import ConfigError


def _args(*argv):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(list(argv))


TINY = ("--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64")


def test_frame_buffer_counts_frames_not_calls(capsys):
    args = _args(*TINY, "--frames", "8", "--warmup", "1", "--frame-buffer", "2", "--json")
    assert bench.run(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["frame_buffer_size"] == 2
    for s in (r["dreamcam"],):
        assert s["frames"] == 8 and s["frames_per_call"] == 2
        calls_s = 4 * s["mean_ms"] / 1e3  # 4 timed calls of 2 frames
        assert s["fps"] == pytest.approx(8 / calls_s, rel=0.25)


def test_live_loop_refuses_several_frames_per_call(capsys):
    with pytest.raises(ConfigError, match="--frame-buffer 2"):
        bench.run(_args(*TINY, "--frames", "2", "--frame-buffer", "2", "--loop"))


def test_batched_frames_are_consecutive_stacks():
    frames = bench.input_frames(16, 8, n=3)
    stacks = bench.batched(frames, 2)
    assert len(stacks) == 3 and stacks[0].shape == (2, 8, 16, 3)
    np.testing.assert_array_equal(stacks[0][1], frames[1])
    np.testing.assert_array_equal(stacks[1][0], frames[2])
    assert bench.batched(frames, 1) is frames


@pytest.mark.parametrize("cfg_type", ["none", "full"])
def test_peer_with_two_frames_per_call_matches_dreamcam(tiny_pipe, cfg_type):
    """The peer (StreamDiffusion 0.1.1) and dreamcam's eager backend, both at frame_buffer_size 2,
    on the same modules: equal to rounding (their uint8 conversions differ in the last bit).
    (With cfg "self" the two differ from the second call on: the peer's frame_buffer_size > 1
    path is the one it never exercised, see the refusals below.)"""
    args = _args(*TINY, "--frame-buffer", "2", "--t-index-list", "30", "--cfg-type", cfg_type, "--guidance", "1.4")
    cfg = bench.resolve(args)
    peer = PeerRunner(tiny_pipe, cfg, args)
    ours = EagerBackend(bench.make_engine(tiny_pipe, cfg, args))
    for stack in bench.batched(bench.input_frames(64, 64, n=4), 2):
        a, b = peer.process(stack), ours.process(stack)
        assert a.shape == b.shape == (2, 64, 64, 3)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("argv,match", [
    (("--t-index-list", "20,40"), r"cannot run 2 step\(s\) with cfg none and frame_buffer_size > 1"),
    (("--t-index-list", "30", "--cfg-type", "initialize"), r"cannot run 1 step\(s\) with cfg initialize"),
])
def test_peer_refuses_what_it_cannot_run_with_two_frames_per_call(tiny_pipe, argv, match):
    args = _args(*TINY, "--frame-buffer", "2", *argv)
    with pytest.raises(ConfigError, match=match):
        PeerRunner(tiny_pipe, bench.resolve(args), args)


def test_knob_flags_reach_the_compiled_backend_constructor(tiny_pipe):
    args = _args(*TINY, "--backend", "compiled", "--fuse-qkv", "--inductor", "tuned-freeze",
                 "--compile-mode", "max-autotune-no-cudagraphs", "--compile-scope", "blocks", "--no-cuda-graph",
                 "--overlap-stages", "--fp8-linear", "--cudnn-exhaustive")
    # resolve refuses a GPU backend on this CPU (before building anything), so the engine comes from
    # the same flags without the backend; the knobs then go where --backend compiled sends them
    cfg = bench.resolve(_args(*TINY))
    engine = bench.make_engine(tiny_pipe, cfg, args)
    opts = bench.backend_options(args, engine)
    assert opts == {"compile": True, "cuda_graph": False, "fuse_qkv": True, "inductor": "tuned-freeze",
                    "compile_mode": "max-autotune-no-cudagraphs", "compile_scope": "blocks", "overlap_stages": True,
                    "parallel_frames": False,
                    "fp8_linear": True, "cudnn_exhaustive": True}
    inspect.signature(CompiledBackend).bind(engine, **opts)  # every option is a constructor keyword
    assert bench.backend_options(_args(*TINY, "--backend", "eager"), engine) == {}


@pytest.mark.parametrize("argv,match", [
    (("--fuse-qkv",), r"--fuse-qkv tunes the compiled backend; this run uses eager"),
    (("--backend", "eager", "--inductor", "tuned", "--compile-scope", "blocks"),
     r"--inductor, --compile-scope tune the compiled backend; this run uses eager: add --backend compiled"),
    (("--overlap-stages",), r"--overlap-stages tunes the compiled backend; this run uses eager"),
    (("--fp8-linear", "--cudnn-exhaustive"),
     r"--fp8-linear, --cudnn-exhaustive tune the compiled backend; this run uses eager"),
    (("--frame-buffer", "0"), r"--frame-buffer must be >= 1 \(frames per UNet call\), got 0"),
])
def test_bad_knob_flags_are_config_errors(argv, match):
    with pytest.raises(ConfigError, match=match):
        bench.resolve(_args(*TINY, *argv))


def test_knob_choices_are_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        _args(*TINY, "--inductor", "fastest")
    assert "invalid choice: 'fastest'" in capsys.readouterr().err


def test_main_names_the_knob_on_a_cpu(capsys):
    assert bench.main([*TINY, "--compile-mode", "max-autotune-no-cudagraphs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dreamcam bench: --compile-mode tunes the compiled backend; this run uses eager")


def test_frame_buffer_two_runs_on_the_cpu_engine_it_builds(tiny_pipe):
    args = _args(*TINY, "--frame-buffer", "3")
    engine = bench.make_engine(tiny_pipe, bench.resolve(args), args)
    assert engine.frame_buffer_size == 3
    out = EagerBackend(engine).process(np.zeros((3, 64, 64, 3), np.uint8))
    assert out.shape == (3, 64, 64, 3) and out.dtype == np.uint8 and torch.is_tensor(engine.init_noise)
