"""README.md stays a page a newcomer reads in minutes, and keeps the test command CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_BYTES = 12 * 1024  # the long reference lives in docs/


def test_readme_is_at_most_12_kb():
    size = README.stat().st_size
    assert size <= MAX_BYTES, f"README.md is {size} bytes, over {MAX_BYTES}: move detail into docs/"


def test_the_test_command_follows_its_marker():
    # .ci/run takes the second line after the marker (the fence's first line) and runs it
    lines = README.read_text(encoding="utf-8").splitlines()
    at = lines.index("<!-- test-command -->")
    assert lines[at + 1] == "```bash"
    assert "python -m pytest" in lines[at + 2] and "--no-deps streamdiffusion==0.1.1" in lines[at + 2]


def test_the_picture_is_small_and_there():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text(encoding="utf-8"))
    assert pictures, "README.md shows no picture of what dreamcam does"
    for rel in pictures:
        assert (ROOT / rel).stat().st_size < 150 * 1024, f"{rel} is over 150 KB"
