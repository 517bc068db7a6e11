"""The GPU sweep's `gputests` row runs the GPU tests file by file (tools/sweep_rows.py GPU_TESTS):
every file it names must exist and hold GPU tests, and every file with GPU tests must be named,
so a test file that moves or is added cannot drop out of the only run that has a GPU."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# files with GPU tests that the row leaves out, and why
LEFT_OUT = {"tests/backends/test_backend_tensorrt.py": "needs TensorRT, which the sweep does not install"}
GPU_MARK = re.compile(r"^\s*(@pytest\.mark\.gpu\b|pytestmark\b.*\bpytest\.mark\.gpu\b)", re.M)


def _gpu_tests(monkeypatch) -> list[str]:
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import sweep_rows

    return sweep_rows.GPU_TESTS.split()


def test_every_file_the_row_names_exists_and_has_gpu_tests(monkeypatch):
    for name in _gpu_tests(monkeypatch):
        path = ROOT / name
        assert path.is_file(), f"GPU_TESTS names {name}, which does not exist"
        assert GPU_MARK.search(path.read_text(encoding="utf-8")), f"{name} has no test marked gpu"


def test_every_file_with_gpu_tests_is_in_the_row(monkeypatch):
    named = set(_gpu_tests(monkeypatch))
    with_gpu = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")
                if GPU_MARK.search(p.read_text(encoding="utf-8"))}
    missing = sorted(with_gpu - named - set(LEFT_OUT))
    assert not missing, f"add to GPU_TESTS in tools/sweep_rows.py (or to LEFT_OUT here, with why): {missing}"
