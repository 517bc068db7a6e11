"""`dreamcam bench` on the tiny pipeline: one JSON object with both sides and their ratio."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamcam.bench import engine as bench
from dreamcam.bench import timing
from dreamcam.errors import ConfigError, DeviceError

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")


def _args(*argv):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(list(argv))


def test_tiny_bench_with_peer_prints_one_json_object(capsys, tmp_path):
    out = tmp_path / "r.json"
    args = _args("--model", "tiny", "--device", "cpu", "--frames", "6", "--warmup", "1", "--width", "64",
                 "--height", "64", "--peer", "--json", "--out", str(out))
    assert bench.run(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r == json.loads(out.read_text())
    assert r["backend"] == "eager" and r["arch"] == "tiny" and r["size"] == "64x64"
    for side in ("peer", "dreamcam"):
        s = r[side]
        assert s["frames"] == 6 and s["fps"] > 0 and 0 < s["p50_ms"] <= s["p99_ms"]
    assert r["ratio_fps"] == pytest.approx(r["dreamcam"]["fps"] / r["peer"]["fps"], rel=1e-2)


def test_peer_on_the_eager_backend_still_does_loop_and_profile(capsys):
    # the interleaved (eager + --peer) timing once returned before --loop and --profile ran
    args = _args("--model", "tiny", "--device", "cpu", "--frames", "3", "--warmup", "0", "--width", "64",
                 "--height", "64", "--peer", "--loop", "--profile", "2", "--json")
    assert bench.run(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["timing"] == "interleaved" and r["peer"]["frames"] == 3
    assert r["loop"]["frames"] == 3 and r["loop_vs_engine"] > 0
    assert r["profile"] and r["stages"]["decode_ms"] > 0


def test_live_loop_mode_runs_the_runner_path(capsys):
    args = _args("--arch", "tiny", "--device", "cpu", "--frames", "4", "--warmup", "0", "--width", "64",
                 "--height", "64", "--loop", "--json")
    assert bench.run(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["loop"]["frames"] == 4 and r["loop_vs_engine"] > 0
    assert r["loop"]["input"].startswith("1280x720") and r["loop"]["latency_p50_ms"] > 0
    assert r["pipelined"]["frames"] == 4 and r["pipelined"]["pipelined"] is True  # eager has submit/collect


def test_profile_lists_where_the_frame_time_goes(capsys):
    args = _args("--model", "tiny", "--device", "cpu", "--frames", "2", "--warmup", "0", "--width", "64",
                 "--height", "64", "--profile", "3", "--json")
    assert bench.run(args) == 0
    r = json.loads(capsys.readouterr().out)
    prof = r["profile"]
    assert 0 < len(prof) <= 15
    st = r["stages"]  # encode / denoise / decode, each timed alone
    assert all(st[k] > 0 for k in ("encode_ms", "denoise_ms", "decode_ms"))
    assert st["sum_ms"] == pytest.approx(st["encode_ms"] + st["denoise_ms"] + st["decode_ms"], abs=1e-3)
    shares = [row["share"] for row in prof]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 1.0001
    assert any("conv" in row["name"] for row in prof)  # a UNet/VAE frame is mostly convolutions
    assert all(row["ms_per_frame"] > 0 and row["calls_per_frame"] > 0 for row in prof)
    kinds = r["profile_kinds"]
    assert kinds["convolution_ms"] > 0 and kinds["matmul_ms"] > 0
    parts = sum(kinds[k] for k in ("convolution_ms", "matmul_ms", "attention_ms", "other_ms"))
    assert parts == pytest.approx(kinds["total_ms"], abs=1e-3)


def test_gpu_profile_counts_each_kernel_once():
    """On a GPU an op's self device time is its kernels', which are rows of their own: the first GPU
    profile summed both, so every share was half what it should be. Rows as the H200 gave them
    (ms for 1 frame): a convolution op and its kernel, a matmul op and its kernel, an Inductor
    kernel with its record_function marker (named after what it fuses: a bias add and SiLU after a
    convolution, which is not convolution work), and a CPU-only op."""
    from dreamcam.bench.profile import summarize_profile

    rows = [("aten::cudnn_convolution", 136, 2400.0, False), ("sm90_xmma_fprop_implicit_gemm", 136, 2400.0, True),
            ("aten::addmm", 104, 800.0, False), ("nvjet_sm90_hsh_bias_TNN", 104, 800.0, True),
            ("triton_poi_fused_convolution_silu_0", 60, 1300.0, False),
            ("triton_poi_fused_convolution_silu_0", 60, 1300.0, True), ("aten::empty", 300, 0.0, False)]
    r = summarize_profile(rows, n=1, cuda=True)
    assert [t["name"] for t in r["top"]] == ["sm90_xmma_fprop_implicit_gemm", "triton_poi_fused_convolution_silu_0",
                                            "nvjet_sm90_hsh_bias_TNN"]
    assert r["kinds"]["total_ms"] == pytest.approx(4.5) and sum(t["share"] for t in r["top"]) == pytest.approx(1.0)
    assert r["kinds"]["convolution_ms"] == pytest.approx(2.4) and r["kinds"]["matmul_ms"] == pytest.approx(0.8)
    assert r["kinds"]["other_ms"] == pytest.approx(1.3) and r["kinds"]["attention_ms"] == 0


def test_stage_times_leave_the_stream_state_as_it_was(tiny_pipe):
    """Profiling stages must not change the live picture: the carried latents and noise are restored."""
    from dreamcam import StreamEngine
    from dreamcam.bench.profile import stage_times

    e = StreamEngine(tiny_pipe, [20, 35], 64, 64, cfg_type="self", device="cpu", dtype=torch.float32)
    e.prepare("a cat", num_inference_steps=50, guidance_scale=1.4, seed=2)
    frame = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    e.img2img(frame)
    before = [t.clone() for t in (e._x_batch, e.stock_noise)]
    stage_times(e, n=2)
    for saved, live in zip(before, (e._x_batch, e.stock_noise)):
        assert torch.equal(saved, live)


def test_stage_times_feed_the_compiled_encoder_what_the_frame_step_feeds_it(tiny_pipe):
    """`bench --profile` times each stage with the backend's compiled modules: its encoder input
    must have the frame step's layout, or the encoder is compiled a second time (a cold compile
    inside the profile) and the stage timed is not the one the frames run."""
    from torch._dynamo.testing import CompileCounter

    from dreamcam import StreamEngine
    from dreamcam.backends.compiled.step import DeviceFrameStep, TinyVaeCalls, swap_modules
    from dreamcam.bench.profile import stage_times

    e = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="none", device="cpu", dtype=torch.float32)
    e.prepare("a cat", seed=2)
    torch._dynamo.reset()
    counter = CompileCounter()
    try:
        encoder = torch.compile(e.vae.encoder, backend=counter, dynamic=False)
        with swap_modules(e, e.unet, TinyVaeCalls(e.vae, encoder, e.vae.decoder)):
            DeviceFrameStep(e)()
            assert counter.frame_count == 1
            stage_times(e, n=1)
        assert counter.frame_count == 1, "stage_times recompiled the encoder: its input layout differs"
    finally:
        torch._dynamo.reset()


def test_bypass_mode_reports_the_loop_rate(capsys):
    args = _args("--bypass", "--seconds", "1", "--json")
    assert bench.run(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["mode"] == "bypass" and r["loop_fps"] > 0 and r["camera_fps"] > 0
    assert 0 < r["latency_p50_ms"] <= r["latency_p99_ms"]


def test_summary_percentiles():
    s = timing.summarize([1.0] * 98 + [10.0, 20.0], wall_s=0.5)
    assert s["fps"] == 200.0 and s["p50_ms"] == 1.0 and s["p99_ms"] > 9.0


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--arch", "sd-turbo"], "--random-weights"),
        (["--frames", "0"], "--frames"),
        (["--t-index-list", "30,10"], "strictly increasing"),
        (["--model", "tiny", "--arch", "sd15", "--random-weights"], "disagree"),
    ],
)
def test_bad_flags_are_config_errors(argv, match):
    with pytest.raises(ConfigError, match=match):
        bench.resolve(_args("--device", "cpu", *argv))


def test_main_exits_2_with_one_line(capsys):
    assert bench.main(["--arch", "sd15", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dreamcam bench: --arch sd15 needs --random-weights")


# The README's bench commands as a new user types them on a CPU: mistakes are one line, said
# before anything is built or timed.
def _dreamcam(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "dreamcam", *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.parametrize("backend", ["compiled", "tensorrt"])
def test_bench_refuses_a_gpu_backend_on_the_cpu_before_building_anything(backend):
    # README's first bench line on a CPU machine: refused before it builds sd-turbo and runs the
    # peer's 210 CPU frames (an hour) to find that the compiled backend needs CUDA
    args = _args("--arch", "sd-turbo", "--random-weights", "--backend", backend, "--device", "cpu", "--peer")
    with pytest.raises(DeviceError, match=f"the {backend} backend needs a CUDA device.*--backend eager"):
        bench.resolve(args)


def test_bench_eager_on_the_cpu_still_resolves():
    cfg = bench.resolve(_args("--model", "tiny", "--device", "cpu", "--backend", "eager"))
    assert cfg["device"] == "cpu" and cfg["arch"] == "tiny"


@pytest.mark.parametrize("where", ["missing-folder", "a-folder"])
def test_bench_out_that_cannot_be_written_is_one_line_before_the_run(tmp_path, where):
    # said before the benchmark, not as a FileNotFoundError / IsADirectoryError traceback after it
    out = tmp_path / "no" / "b.json" if where == "missing-folder" else tmp_path
    r = _dreamcam("bench", "--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64",
                  "--frames", "1", "--warmup", "0", "--json", "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""  # refused before any frame was timed
    assert "--out" in r.stderr.strip().splitlines()[-1]


def test_bench_out_is_written(tmp_path):
    out = tmp_path / "b.json"
    r = _dreamcam("bench", "--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64",
                  "--frames", "1", "--warmup", "0", "--json", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_text().strip() == r.stdout.strip()
