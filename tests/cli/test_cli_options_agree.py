"""The commands agree with each other and say their defaults: --cfg (alias --cfg-type), --width,
--height, --device and --engines-dir mean the same in run, bench and build-engines; help shows
each default; bench loads the models run loads; `dreamcam --version` answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dreamcam
from dreamcam.backends import engines_dir
from dreamcam.cli import bench, run
from dreamcam.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("run", "bench", "build-engines")


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())  # one line: wrapping may split any phrase


@pytest.fixture
def no_engines_env(monkeypatch):
    """$DREAMCAM_ENGINES_DIR unset for the test, and as it was afterwards (a check sets it)."""
    monkeypatch.setenv("DREAMCAM_ENGINES_DIR", "placeholder")  # recorded, so teardown restores the original
    monkeypatch.delenv("DREAMCAM_ENGINES_DIR")


def test_run_help_shows_its_defaults_and_explains_size_and_device(capsys):
    text = _help("run", capsys)
    for shown in ("(default: webcam)", "(default: stabilityai/sd-turbo)", "(default: 512)", "(default: auto)",
                  "default virtualcam", "engine image width in pixels", "engine image height in pixels",
                  "where the model runs"):
        assert shown in text, shown
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_cfg_with_cfg_type_as_alias(command):
    parser = build_parser(command)
    assert parser.parse_args([command, "--cfg", "self"]).cfg_type == "self"
    assert parser.parse_args([command, "--cfg-type", "full"]).cfg_type == "full"
    assert parser.parse_args([command]).cfg_type == "none"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_shows_the_same_engine_cache(command, capsys):
    assert f"default $DREAMCAM_ENGINES_DIR if set, else: {engines_dir()}" in _help(command, capsys)


def test_engines_dir_on_the_command_line_is_where_every_backend_looks(tmp_path, no_engines_env):
    folder = tmp_path / "cache"
    args = build_parser("run").parse_args(["run", "--model", "tiny", "--source", "testpattern", "--sink", "null",
                                           "--engines-dir", str(folder)])
    run.check(args)
    assert engines_dir() == folder and folder.is_dir()
    args = build_parser("bench").parse_args(["bench", "--engines-dir", str(tmp_path / "other")])
    bench.check(args)
    assert engines_dir() == tmp_path / "other"


def test_a_run_leaves_the_callers_engine_cache_as_it_was(tmp_path, no_engines_env):
    code = main(["run", "--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64", "--source",
                 "testpattern", "--sink", "null", "--no-osc", "--frames", "1", "--engines-dir", str(tmp_path)])
    assert code == 0 and "DREAMCAM_ENGINES_DIR" not in os.environ


def test_devices_names_the_engine_cache(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "DREAMCAM_ENGINES_DIR": str(tmp_path), "DISPLAY": ""}
    r = subprocess.run([sys.executable, "-m", "dreamcam", "devices"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"engine cache: {tmp_path}" in r.stdout


def test_version():
    r = subprocess.run([sys.executable, "-m", "dreamcam", "--version"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "plugin")}, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"dreamcam {dreamcam.__version__}"


def test_bench_loads_a_model_folder_as_run_does(tiny_pipe, tmp_path, capsys):
    tiny_pipe.save_pretrained(tmp_path / "model")
    out = tmp_path / "bench.json"
    code = main(["bench", "--model", str(tmp_path / "model"), "--device", "cpu", "--width", "64", "--height", "64",
                 "--frames", "2", "--warmup", "0", "--cfg", "self", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["arch"] == str(tmp_path / "model") and result["cfg_type"] == "self"
    assert result["dreamcam"]["frames"] == 2
    assert f"loading model {tmp_path / 'model'}" in capsys.readouterr().err


def test_bench_refuses_random_weights_without_an_architecture(capsys):
    assert main(["bench", "--random-weights", "--device", "cpu"]) == 2
    assert "--random-weights builds an --arch" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["bench", "--vae", "madebyollin/taesd"], "--vae cannot be used with --model tiny"),
    (["bench", "--arch", "sd15", "--random-weights", "--lora", "style.safetensors"], "--lora cannot be used with --arch sd15"),
    (["build-engines", "--arch", "sd15", "--random-weights", "--lcm-lora", "x"], "--lcm-lora cannot be used with --arch sd15"),
    (["bench", "--model", "some/model", "--arch", "sd15"], "disagree"),
])
def test_weight_flags_for_a_model_built_from_random_weights_are_refused(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
