"""The README's command for a machine with no GPU and no download (the toy model shipped in the
package) runs as written there (with
fewer, smaller frames and a free OSC port, so the test is quick and never meets a running dreamcam)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_tiny_command() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"`(dreamcam run --model (?:toy|tiny) [^`]*)`", text)
    assert found, "README.md no longer shows a `dreamcam run --model toy ...` command"
    return shlex.split(found.group(1))


@pytest.mark.slow
def test_the_no_gpu_command_of_the_readme_records_a_video(tmp_path):
    words = readme_tiny_command()[1:]
    assert "--frames" in words and any(w.startswith("file:") for w in words)
    words[words.index("--frames") + 1] = "2"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "dreamcam", *words, "--width", "64", "--height", "64", "--osc-port", "0"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = next(w for w in words if w.startswith("file:")).removeprefix("file:")
    assert (tmp_path / out).stat().st_size > 0
