"""Backends registered by name: `--backend`, `--backend auto` and `dreamcam devices` read the registry.

A backend registered here (a real one: it frames each captured frame and hands back the engine
size image untouched) shows in auto's candidates, is built by name and by auto, and is listed in
`dreamcam devices`' report, usable or with its reason. Nothing is mocked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine
from dreamcam.backends import (
    Backend,
    auto_candidates,
    backend_names,
    backend_spec,
    check_backend_device,
    choose_backend,
    make_backend,
    register,
    unregister,
)
from dreamcam.cli import devices
from dreamcam.errors import ConfigError, DeviceError
from dreamcam.frames import fit

SIZE = 64
PLUGIN = Path(__file__).resolve().parents[2] / "plugin"  # this tree's package, also for subprocesses


class PassThrough:
    """A backend that runs no model: each frame comes back framed to the engine size."""

    name = "passthrough"
    overlaps = False

    def __init__(self, engine: StreamEngine, *, label: str = "") -> None:
        self.engine, self.label, self.closed = engine, label, False
        self._done: deque[np.ndarray] = deque()

    def process(self, frame: np.ndarray) -> np.ndarray:
        return frame.copy()

    def submit(self, frame: np.ndarray, fit_mode: str = "crop") -> None:
        self._done.append(fit(frame, self.engine.width, self.engine.height, fit_mode))

    def collect(self) -> np.ndarray:
        return self._done.popleft()

    def fence(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> PassThrough:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def passthrough():
    """PassThrough registered for any device, tried by auto before every built-in backend."""
    register("passthrough", PassThrough, auto_rank=0)
    yield "passthrough"
    unregister("passthrough")


@pytest.fixture(scope="module")
def engine(tiny_pipe):
    e = StreamEngine(tiny_pipe, [35], SIZE, SIZE, cfg_type="none", device="cpu", dtype=torch.float32)
    e.prepare("a cat")
    return e


def _devices_report(*argv: str) -> None:
    """`dreamcam devices [argv]` in this process, where the test's registration is seen."""
    parser = argparse.ArgumentParser()
    devices.add_arguments(parser)
    assert devices.run(parser.parse_args(list(argv))) == 0


def test_a_registered_backend_is_an_auto_candidate_and_is_built_by_name_and_by_auto(passthrough, engine):
    assert auto_candidates("cpu") == ["passthrough", "eager"]
    assert auto_candidates("cuda")[0] == "passthrough"
    assert "passthrough" in backend_names() and choose_backend("auto", "cpu") == "passthrough"
    with make_backend("auto", engine, label="first candidate's option") as b:
        assert isinstance(b, PassThrough) and isinstance(b, Backend)
        assert b.label == "first candidate's option"
        b.submit(np.full((48, 80, 3), 7, np.uint8))
        assert b.collect().shape == (SIZE, SIZE, 3)
    assert b.closed
    with make_backend("passthrough", engine) as b:
        assert b.name == "passthrough"


def test_once_unregistered_the_backend_is_gone_and_auto_is_as_before(engine):
    register("passthrough", PassThrough, auto_rank=0)
    unregister("passthrough")
    assert auto_candidates("cpu") == ["eager"]
    with pytest.raises(ConfigError, match="must be one of auto, eager, compiled, tensorrt; got 'passthrough'"):
        make_backend("passthrough", engine)


def test_dreamcam_devices_lists_a_registered_backend_and_says_auto_runs_it(passthrough, capsys):
    compute = devices.find_compute()
    entry = {b["name"]: b for b in compute["backends"]}["passthrough"]
    assert entry == {"name": "passthrough", "usable": True, "why": None, "version": None}
    assert compute["auto"] == "passthrough"
    _devices_report()
    text = capsys.readouterr().out
    assert "  passthrough: usable\n" in text and "--backend auto runs passthrough here" in text
    _devices_report("--json")
    report = json.loads(capsys.readouterr().out)
    assert report["compute"]["auto"] == "passthrough"
    assert [b["name"] for b in report["compute"]["backends"]][-1] == "passthrough"


def test_a_backend_that_cannot_run_here_is_reported_with_its_reason_and_auto_passes_it_by(capsys):
    register("needs-gpu", PassThrough, devices=("cuda",), auto_rank=0)
    register("broken", PassThrough, auto_rank=1, problem=lambda: "libbroken is missing: pip install broken",
             version=lambda: "0.0.1")
    try:
        by_name = {b["name"]: b for b in devices.find_compute()["backends"]}
        if not torch.cuda.is_available():
            assert by_name["needs-gpu"] == {"name": "needs-gpu", "usable": False,
                                            "why": "needs a CUDA GPU (none here)", "version": None}
        assert by_name["broken"] == {"name": "broken", "usable": False,
                                     "why": "libbroken is missing: pip install broken", "version": "0.0.1"}
        _devices_report()
        assert "  broken: unusable: libbroken is missing: pip install broken\n" in capsys.readouterr().out
        with pytest.raises(DeviceError, match="the needs-gpu backend needs a CUDA device; this run is on cpu"):
            check_backend_device("needs-gpu", "cpu")
    finally:
        unregister("needs-gpu")
        unregister("broken")


def test_auto_skips_a_backend_whose_software_is_not_installed():
    register("absent", PassThrough, auto_rank=0, present=lambda: False)
    try:
        assert auto_candidates("cpu") == ["eager"]
        assert backend_spec("absent").name == "absent"  # still there by name: its build says why
    finally:
        unregister("absent")


@pytest.mark.parametrize("name", ["auto", "", "two words", "eager"])
def test_a_name_that_is_taken_or_not_a_word_is_refused(name):
    with pytest.raises(ValueError, match="backend name|already registered"):
        register(name, PassThrough)


def test_listing_the_backends_imports_none_of_them():
    """The CLI checks --backend before loading torch: the registry names each backend's code by
    its import path, so listing them imports neither torch nor TensorRT."""
    code = ("import sys, dreamcam.backends as b; names = b.backend_names(); auto = b.auto_candidates('cpu'); "
            "print(names, auto, 'torch' in sys.modules, 'tensorrt' in sys.modules, "
            "'dreamcam.backends.eager' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "('auto', 'eager', 'compiled', 'tensorrt') ['eager'] False False False"
