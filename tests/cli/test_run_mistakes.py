"""`dreamcam run` mistakes a new user makes following README.md: each must stop with one line and
exit code 2, and, where the mistake is known before the model loads, before the (slow) model load.

The CLI runs in-process (`cli.main`) on real files, or as a real process where said; "loading
model" on stderr is the sign that the slow part started. No camera, display or GPU exists here:
those cases are their real absence on this machine (a device node that does not exist, an X
display nobody serves).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dreamcam import tiny_pipeline

from dreamcam.cli import main as cli
from dreamcam.cli import run_options
from dreamcam.control.osc.maps import parse_feedback
from dreamcam.errors import ConfigError

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin")
BASE = ["run", "--model", "tiny", "--width", "64", "--height", "64", "--sink", "null", "--frames", "1", "--no-osc"]


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main([*BASE, *args])
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "make_args, words",
    [
        (lambda t: ["--source", f"file:{t}/missing.mp4"], "video file not found"),
        (lambda t: ["--source", f"file:{t / 'garbage.mp4'}"], "cannot read video"),
        (lambda t: ["--source", f"image:{t}/missing.jpg"], "image not found"),
        (lambda t: ["--source", f"image:{t / 'garbage.mp4'}"], "cannot read image"),
        (lambda t: ["--source", "webcam:/dev/video97"], "camera /dev/video97 does not exist"),
        (lambda t: ["--source", "webcam:abc"], "webcam takes a camera number or a device path"),
    ],
)
def test_bad_source_is_said_before_the_model_loads(capsys, tmp_path, make_args, words):
    (tmp_path / "garbage.mp4").write_bytes(b"not a video\n" * 100)
    code, err = run_cli(capsys, *make_args(tmp_path))
    assert code == 2 and words in one_error_line(err), err
    assert "loading model" not in err, err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="camera numbers map to /dev/videoN on Linux only")
@pytest.mark.skipif(os.path.exists("/dev/video97"), reason="this machine has a /dev/video97")
def test_a_camera_number_with_no_device_node_is_said_before_the_model_loads(capsys):
    # `--source webcam` (README's first command) on a machine without that camera: said before
    # the model load and warm-up (minutes with a real model)
    code = cli.main([*BASE, "--source", "webcam:97"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("dreamcam: error:")]
    assert code == 2 and len(errors) == 1 and "camera 97 did not open" in errors[0], err
    assert "loading model" not in err, err


def test_screen_without_a_display_is_said_before_the_model_loads(capsys, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":93")  # no X server listens there
    code, err = run_cli(capsys, "--source", "screen")
    assert code == 2 and "no display" in one_error_line(err), err
    assert "loading model" not in err, err


@pytest.mark.parametrize("backend", ["compiled", "tensorrt"])
def test_gpu_backend_on_cpu_is_said_before_the_model_loads(capsys, backend):
    code, err = run_cli(capsys, "--source", "testpattern", "--device", "cpu", "--backend", backend)
    assert code == 2 and f"the {backend} backend needs a CUDA device" in one_error_line(err), err
    assert "--backend eager" in err and "loading model" not in err, err


def test_steps_that_disagree_with_the_index_list_are_refused(capsys):
    code, err = run_cli(capsys, "--source", "testpattern", "--steps", "3", "--t-index-list", "32,45")
    line = one_error_line(err)
    assert code == 2 and "--steps 3 and --t-index-list 32,45 (2 indices) disagree" in line, err


def test_steps_matching_the_index_list_and_an_empty_list(capsys):
    args = cli.build_parser("run").parse_args([*BASE, "--steps", "2", "--t-index-list", "32,45"])
    assert run_options.t_index_list(args, 0.5) == [32, 45]
    args = cli.build_parser("run").parse_args([*BASE, "--steps", "3"])
    assert len(run_options.t_index_list(args, 0.5)) == 3
    args = cli.build_parser("run").parse_args([*BASE, "--t-index-list", ""])
    with pytest.raises(ConfigError, match="--t-index-list takes whole numbers"):
        run_options.t_index_list(args, 0.5)


@pytest.mark.parametrize("fps", ["0", "-5"])
def test_fps_zero_is_refused_not_read_as_the_default(capsys, fps):
    code, err = run_cli(capsys, "--source", "testpattern", "--fps", fps)
    assert code == 2 and "--fps must be > 0" in one_error_line(err), err


@pytest.mark.parametrize(
    "flag, value",
    [("--vae", "madebyollin/taesd"), ("--lora", "style.safetensors:0.8"),
     ("--lcm-lora", "latent-consistency/lcm-lora-sdv1-5"), ("--model-config", "./sd15")],
)
def test_weight_flags_with_the_tiny_model_are_refused_not_ignored(capsys, flag, value):
    code, err = run_cli(capsys, "--source", "testpattern", flag, value)
    assert code == 2 and f"{flag} cannot be used with --model tiny" in one_error_line(err), err


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:abc", ":9001"])
def test_osc_feedback_error_quotes_what_the_user_wrote(text):
    with pytest.raises(ConfigError) as e:
        parse_feedback(text)
    assert str(e.value).endswith(f"got {text!r}"), str(e.value)


def test_model_errors_are_one_line_without_diffusers_chatter(tmp_path):
    """A diffusers folder whose VAE is TAESD (what save_pretrained writes after swapping in the
    tiny VAE) made diffusers warn "Expected types for vae ..." above dreamcam's one error line."""
    tiny_pipeline(seed=0).save_pretrained(tmp_path / "folder")
    env = {k: v for k, v in os.environ.items() if k != "DIFFUSERS_VERBOSITY"}
    env.update(PYTHONPATH=PLUGIN, HF_HUB_OFFLINE="1")
    r = subprocess.run(
        [sys.executable, "-m", "dreamcam", *BASE[:1], "--model", str(tmp_path / "folder"), *BASE[3:],
         "--source", "testpattern", "--device", "cpu", "--lora", str(tmp_path / "missing.safetensors")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("dreamcam: loading model"), r.stderr
    assert lines[1].startswith("dreamcam: error: LoRA path") and "does not exist" in lines[1], r.stderr


def test_osc_on_an_address_this_machine_lacks_says_so(capsys):
    """--osc-host with an address no interface has: not "is another dreamcam running?"."""
    code = cli.main([*BASE[:-1], "--source", "testpattern", "--osc-host", "192.0.2.77", "--osc-port", "19190"])
    err = capsys.readouterr().err
    line = one_error_line(err)
    assert code == 2 and "cannot listen for OSC on 192.0.2.77:19190" in line, err
    assert "no such address" in line and "another dreamcam" not in line, err


# The same mistakes through a real `dreamcam run` process.
def _dreamcam(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PLUGIN, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "dreamcam", "run", "--model", "tiny", "--width", "64", "--height", "64",
           "--sink", "null", "--no-osc", "--frames", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda t: f"file:{t / 'no-such-clip.mp4'}", "video file not found"),
        (lambda t: f"file:{_write(t / 'empty.mp4', b'')}", "cannot read video"),
        (lambda t: f"image:{t / 'no-such.png'}", "image not found"),
        (lambda t: f"image:{_write(t / 'photo.png', b'not a picture at all')}", "cannot read image"),
    ],
)
def test_a_bad_input_file_is_one_line_before_the_model_loads(tmp_path, make, words):
    # the file is opened before the model load and warm-up (a minute or more with a real model
    # and the compiled backend): a typo in the path must not wait for them
    r = _dreamcam("--source", make(tmp_path))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "loading model" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("dreamcam: error:")]
    assert len(errors) == 1 and words in errors[0], r.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
