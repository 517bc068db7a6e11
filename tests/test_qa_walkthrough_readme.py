"""README walkthrough regressions: what a new user typing the README's commands on a CPU hit."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamcam.bench import engine as bench
from dreamcam.errors import ConfigError, DeviceError
from dreamcam.control.presets import parse_presets

PLUGIN = str(Path(__file__).resolve().parents[1] / "plugin")


def _dreamcam(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "dreamcam", *args], capture_output=True, text=True, env=env, timeout=timeout)


def _bench_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("backend", ["compiled", "tensorrt"])
def test_bench_refuses_a_gpu_backend_on_the_cpu_before_building_anything(backend):
    # README's first bench line on a CPU machine: it built sd-turbo, ran the peer's 210 CPU frames
    # (an hour), and only then said that the compiled backend needs CUDA
    args = _bench_args("--arch", "sd-turbo", "--random-weights", "--backend", backend, "--device", "cpu", "--peer")
    with pytest.raises(DeviceError, match=f"the {backend} backend needs a CUDA device.*--backend eager"):
        bench.resolve(args)


def test_bench_eager_on_the_cpu_still_resolves():
    cfg = bench.resolve(_bench_args("--model", "tiny", "--device", "cpu", "--backend", "eager"))
    assert cfg["device"] == "cpu" and cfg["arch"] == "tiny"


@pytest.mark.parametrize("where", ["missing-folder", "a-folder"])
def test_bench_out_that_cannot_be_written_is_one_line_before_the_run(tmp_path, where):
    # before the fix: the whole benchmark, then a FileNotFoundError / IsADirectoryError traceback (exit 1)
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


def test_stats_json_that_is_a_folder_is_said_before_the_model_loads(tmp_path):
    # before the fix: the whole run (possibly hours), then "cannot write --stats-json" at exit
    r = _dreamcam("run", "--model", "tiny", "--width", "64", "--height", "64", "--source", "testpattern",
                  "--sink", "null", "--no-osc", "--frames", "2", "--stats-json", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "--stats-json" in r.stderr and "loading model" not in r.stderr


def test_stats_json_check_leaves_no_file_behind(tmp_path):
    from dreamcam.cli.run_options import check_output_file

    target = tmp_path / "stats.json"
    check_output_file(str(target), "--stats-json")
    assert not target.exists()
    with pytest.raises(ConfigError, match="folder .* does not exist"):
        check_output_file(str(tmp_path / "no" / "stats.json"), "--stats-json")


@pytest.mark.parametrize(
    "text, line",
    [
        ('[watercolor]\nprompt = "x"\nstrength = 0.45\n\n[ink]\nprompt = "ink"\n\nstrength = 7\n', 8),
        ('[ink]\nprompt = "ink"\nstrenght = 0.2\n', 3),
        ('["neon city"]\nseed = 7\n"guidance" = 99\n', 3),
    ],
)
def test_a_broken_preset_names_the_line_that_is_wrong(text, line):
    # README: "a broken edit keeps the last good presets and names the line that is wrong";
    # it named the preset's [header] line instead
    with pytest.raises(ConfigError, match=rf"^p.toml: line {line}: "):
        parse_presets(text, "p.toml")
