"""The flicker figure where users see it: `dreamcam run --stats-json` (a number, or null in bypass
and with the meter off), the console status line, `--flicker-rate` checks, the test-clip writer
(`python -m dreamcam.bench.clips`) and `dreamcam bench --flicker --sweep`."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from dreamcam.cli import bench_args
from dreamcam.cli.console import status_printer
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS, Param
from dreamcam.runtime.flicker import CUT_GREY, FlowWarp, measure_pair

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")
ENV = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}


def dreamcam(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dreamcam", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def run_stats(tmp_path, *extra: str) -> dict:
    image, stats = tmp_path / "still.png", tmp_path / "stats.json"
    img = np.zeros((64, 64, 3), np.uint8)
    cv2.circle(img, (32, 32), 20, (40, 200, 90), -1)
    cv2.imwrite(str(image), img)
    r = dreamcam("run", "--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64",
                 "--source", f"image:{image}", "--sink", "null", "--no-osc", "--frames", "3",
                 "--stats-json", str(stats), *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(stats.read_text())


def test_stats_json_has_the_flicker_figure_and_null_where_there_is_none(tmp_path):
    s = run_stats(tmp_path)
    assert isinstance(s["flicker"], float) and isinstance(s["flicker_rel"], float)
    assert s["flicker_samples"] + s["flicker_cuts"] >= 1 and s["flicker_ms"] > 0
    off = run_stats(tmp_path, "--bypass")  # bypass: the output is the input, there is no figure
    assert off["flicker"] is None and off["flicker_rel"] is None and off["flicker_samples"] == 0
    assert run_stats(tmp_path, "--flicker-rate", "0")["flicker"] is None  # the meter off


def test_a_bad_flicker_rate_is_one_line_before_the_model_loads():
    r = dreamcam("run", "--model", "tiny", "--source", "testpattern", "--sink", "null", "--flicker-rate", "-1")
    assert r.returncode == 2 and "--flicker-rate" in r.stderr and "loading model" not in r.stderr, r.stderr


def test_the_status_line_says_the_figure_or_that_there_is_none(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    st = {"fps": 30.0, "engine_ms": 5.0, "latency_ms": 40.0, "input_fps": 30.0, "dropped": 0, "bypass": False,
          "signal_lost": False, "flicker": None, "flicker_rel": None}
    show = status_printer()
    show(st)
    assert "flicker -" in err.getvalue()
    show = status_printer()  # a new printer: off a terminal it prints one line every 10 s
    show({**st, "flicker": 3.14, "flicker_rel": 0.8})
    assert "flicker 3.1 (0.80x input)" in err.getvalue()


def test_the_clip_writer_makes_a_still_noisy_scene_with_one_cut(tmp_path):
    out = tmp_path / "clip.mp4"
    r = subprocess.run([sys.executable, "-m", "dreamcam.bench.clips", str(out), "--size", "96x64", "--fps", "10",
                        "--still", "0.8", "--after", "0.5", "--noise", "5"], capture_output=True, text=True, env=ENV,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "13 frames 96x64" in r.stdout and "cut before frame 8" in r.stdout
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 13 and frames[0].shape == (64, 96, 3)
    warp = FlowWarp()
    errors = [measure_pair(warp, a, b, a, b)[1] for a, b in zip(frames, frames[1:])]
    assert np.argmax(errors) == 7 and errors[7] > CUT_GREY  # the cut: frames 7 -> 8
    still = [e for i, e in enumerate(errors) if i != 7]
    assert 1.0 < min(still) and max(still) < 8, still  # camera noise on a still scene: never two equal frames


def sweep_args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_args.add_arguments(parser)
    args = parser.parse_args([])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_sweep_takes_any_numeric_knob_and_says_what_is_wrong():
    assert bench_args.parse_sweep("strength=0.3,0.6") == ("strength", [0.3, 0.6])
    assert bench_args.parse_sweep("seed=1,2") == ("seed", [1, 2])
    for bad, said in [("strength", "KNOB=V1"), ("colour=1", "no live knob"), ("prompt=1", "not a number"),
                      ("strength=0.3,x", "'x' is not a number"), ("strength=0.3,2", "between 0 and 1")]:
        with pytest.raises(ConfigError, match=said):
            bench_args.parse_sweep(bad)
    with pytest.raises(ConfigError, match="--sweep belongs to --flicker"):
        bench_args.check(sweep_args(sweep="strength=0.3"))
    with pytest.raises(ConfigError, match="drop --peer"):
        bench_args.check(sweep_args(flicker=True, peer=True))
    with pytest.raises(ConfigError, match="no such file"):
        bench_args.check(sweep_args(flicker=True, source="file:/no/such/clip.mp4"))


def test_the_default_sweep_is_stability_where_the_knob_table_has_it(monkeypatch):
    if "stability" not in PARAMS:
        assert bench_args.sweep_of(sweep_args()) == (None, [None])  # the current settings only
        monkeypatch.setitem(PARAMS, "stability", Param("stability", float, 0.0, "steadiness", 0.0, 1.0))
    assert bench_args.sweep_of(sweep_args()) == ("stability", [0.0, 0.5, 0.8])


def test_bench_flicker_prints_each_setting_side_by_side(tmp_path):
    clip = tmp_path / "clip.mp4"
    subprocess.run([sys.executable, "-m", "dreamcam.bench.clips", str(clip), "--size", "64x64", "--fps", "10",
                    "--still", "0.6", "--after", "0"], check=True, env=ENV, timeout=120, capture_output=True)
    common = ["bench", "--flicker", "--source", f"file:{clip}", "--sweep", "strength=0.3,0.6", "--model", "tiny",
              "--device", "cpu", "--width", "64", "--height", "64", "--frames", "5", "--warmup", "1"]
    r = dreamcam(*common, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["mode"] == "flicker" and result["knob"] == "strength"
    rows = result["rows"]
    assert [row["setting"] for row in rows] == ["strength=0.3", "strength=0.6"]
    for row in rows:
        assert row["frames"] == 5 and row["failed"] == 0
        assert row["measured"] + row["cuts"] + row["skipped"] == row["pairs"] == 4
        assert row["flicker"] > 0 and row["flicker_rel"] > 0 and row["fps"] > 0 and row["latency_p50_ms"] > 0
        assert -1 <= row["follow"] <= 1 and row["cut_frames"] is None  # a still clip with no cut in 5 frames
    # more strength, more of the picture comes from noise: the output flickers more
    assert rows[1]["flicker"] > rows[0]["flicker"]
    text = dreamcam(*common)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert any(line.split()[0] == "strength=0.3" for line in lines if line.strip())
    assert any(line.split()[0] == "strength=0.6" for line in lines if line.strip())


def test_follow_and_cut_say_how_the_output_tracks_its_input_and_a_cut():
    """follow: correlation of output and input; cut: frames until the output shows a cut's new
    scene. An output that is its input follows at 1 and shows a cut at once; one that lags two
    frames behind shows it two frames late; one stuck on the first picture never follows the cut."""
    from dreamcam.bench.clips import ClipSpec, clip_frames
    from dreamcam.bench.flicker import follow_and_cut, thumb

    spec = ClipSpec(64, 64, fps=10, still_s=1.0, after_s=1.0, noise=4.0)
    frames = list(clip_frames(spec))
    inputs = [thumb(f) for f in frames]
    n = len(inputs)
    same = {k: inputs[k % n] for k in range(n + 5)}  # the run goes on past the clip's end: the wrap is a cut too
    follow, cut = follow_and_cut(same, inputs)
    assert follow == pytest.approx(1.0) and cut == 0
    late = {k: inputs[max(0, k - 2) % n] for k in range(n)}
    assert follow_and_cut(late, inputs)[1] == 2
    stuck_follow, stuck_cut = follow_and_cut({k: inputs[0] for k in range(n)}, inputs)
    assert stuck_cut is None and stuck_follow < 0.85  # half the clip is the first scene: it follows there
    assert follow_and_cut({}, inputs) == (None, None)
