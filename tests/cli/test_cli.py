"""The `dreamcam` command as a user runs it: a real process, real files, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from dreamcam.cli.run_options import cpu_fallback_hint

ROOT = Path(__file__).resolve().parents[2]


def dreamcam(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "dreamcam", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_run_tiny_testpattern_to_file(tmp_path):
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    r = dreamcam(
        "run", "--model", "tiny", "--source", "testpattern", "--sink", f"file:{out}",
        "--frames", "30", "--width", "128", "--height", "96", "--stats-json", str(stats), "--osc-port", "0",
    )
    assert r.returncode == 0, r.stderr
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (128, 96)
    ok, first = cap.read()
    assert ok and first.std() > 1.0  # a picture, not a blank
    s = json.loads(stats.read_text())
    assert s["frames"] == 30 and s["fps"] > 0 and s["p99_ms"] >= s["p50_ms"] > 0
    assert "done: 30 frames" in r.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--width", "100"], "width must be a positive multiple of 8"),
        (["--strength", "1.5"], "strength must be between 0 and 1"),
        (["--t-index-list", "30,10"], "strictly increasing"),
        (["--t-index-list", "10,60"], "values must lie in [0, 50)"),
        (["--source", "nosuch"], "unknown source"),
        (["--sink", "nosuch"], "unknown sink"),
        (["--steps", "0"], "steps must be a whole number >= 1"),
        (["--similarity-filter", "1.5"], "--similarity-filter takes a cosine similarity"),
        (["--presets", "/nonexistent/presets.toml"], "presets"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = dreamcam("run", "--model", "tiny", "--source", "testpattern", "--sink", "null", "--frames", "1", *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], r.stderr


def test_help_starts_without_torch():
    """`dreamcam --help` must not pay torch's ~2 s import (bench's and build-engines' flags are only
    built when those commands run). `dreamcam devices` does import it: it reports the GPUs and
    which backend can run (tests/cli/test_devices.py)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "DISPLAY": "", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "plugin")}
    code = "import sys; from dreamcam.cli.main import build_parser; build_parser(None).format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    code = "import sys; from dreamcam.cli.main import build_parser; build_parser('*').format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"  # every command's flags: run, bench, devices, build-engines
    code = "import sys; import dreamcam.bench.engine; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.strip() == "True"  # the checks above can fail: the benchmark itself imports torch


def test_compiled_knobs_on_a_cpu_run_are_refused_with_one_line(capsys, tmp_path):
    """--fuse-qkv etc. tune the compiled backend only: on a CPU (auto -> eager) they are named and
    refused before the model loads, never silently ignored."""
    from dreamcam.cli.main import main

    code = main(["run", "--model", "tiny", "--device", "cpu", "--source", "testpattern", "--sink", "null",
                 "--no-osc", "--frames", "1", "--fuse-qkv", "--compile-scope", "blocks"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--fuse-qkv, --compile-scope tune the compiled backend; this run uses eager" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def test_a_real_model_falling_back_to_the_cpu_says_why_and_what_to_install(tmp_path, tiny_pipe):
    assert "CPU-only build" in cpu_fallback_hint(cuda_build=None, mps=False)
    assert "download.pytorch.org/whl/cu" in cpu_fallback_hint(cuda_build=None, mps=False)
    assert "nvidia-smi" in cpu_fallback_hint(cuda_build="13.0", mps=False)
    assert "MPS" in cpu_fallback_hint(cuda_build=None, mps=True)

    tiny_pipe.save_pretrained(tmp_path / "model")
    args = ("--source", "testpattern", "--sink", "null", "--frames", "1", "--width", "64", "--height", "64", "--no-osc")
    r = dreamcam("run", "--model", str(tmp_path / "model"), *args)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("runs on the CPU") == 1
    r = dreamcam("run", "--model", str(tmp_path / "model"), "--device", "cpu", *args)  # asked for: nothing to say
    assert r.returncode == 0 and "runs on the CPU" not in r.stderr, r.stderr


# macOS and Windows stood in for by sys.platform
def test_mac_without_mps_is_not_told_to_install_a_cuda_torch(monkeypatch):
    # an Intel Mac, or a torch without MPS: torch.version.cuda is None there as on a CPU-only build
    monkeypatch.setattr(sys, "platform", "darwin")
    hint = cpu_fallback_hint(cuda_build=None, mps=False)
    assert "runs on the CPU" in hint and "macOS has no CUDA" in hint
    assert "pip install" not in hint and "cu128" not in hint


def test_windows_cpu_only_torch_still_gets_the_cuda_install_line(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    assert "download.pytorch.org/whl/cu128" in cpu_fallback_hint(cuda_build=None, mps=False)


def test_a_long_backend_start_counts_seconds_on_a_terminal(monkeypatch):
    import io
    import time as _time

    from dreamcam.cli import console

    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    with console.elapsed("backend compiled: compiling"):
        _time.sleep(2.3)
    out = err.getvalue()
    assert out.startswith("dreamcam: backend compiled: compiling ...")
    assert "\rdreamcam: backend compiled: compiling ... 1 s" in out and "... 2 s" in out and out.endswith("\n")
    err = io.StringIO()  # not a terminal (a log file): one line, no counter
    monkeypatch.setattr(sys, "stderr", err)
    with console.elapsed("backend eager: warming up"):
        pass
    assert err.getvalue() == "dreamcam: backend eager: warming up ...\n"


def test_a_negative_prompt_that_cannot_steer_is_pointed_out():
    base = ("run", "--model", "tiny", "--source", "testpattern", "--sink", "null", "--frames", "1",
            "--width", "64", "--height", "64", "--no-osc", "--negative-prompt", "blurry")
    r = dreamcam(*base, "--cfg", "self")
    assert r.returncode == 0 and "negative prompt steers only with --cfg full or initialize" in r.stderr, r.stderr
    r = dreamcam(*base, "--cfg", "full", "--guidance", "1.5")
    assert r.returncode == 0 and "negative prompt steers only" not in r.stderr, r.stderr


def test_a_preset_binding_without_presets_is_refused_before_any_output_is_written(tmp_path):
    mapping = tmp_path / "map.toml"
    mapping.write_text('[[bind]]\naddress = "/1/push1"\npreset = "ink"\n')
    out = tmp_path / "out.mp4"
    r = dreamcam("run", "--model", "tiny", "--source", "testpattern", "--sink", f"file:{out}", "--frames", "1",
                 "--osc-map", str(mapping), "--osc-port", "0")
    assert r.returncode == 2 and "no presets file is given; add --presets FILE" in r.stderr, r.stderr
    assert not out.exists()  # an older recording of that name would have been overwritten
