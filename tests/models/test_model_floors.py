"""The models package in one-way floors: paths and quieting at the bottom, then the tiny pipeline,
then VAE/LoRA components, then `load_pipeline`; the engine sits above models and below backends.
Importing a floor never imports one above it (each checked in a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dreamcam.errors import ModelLoadError
from dreamcam.models.paths import check_checkpoint_file, check_exists, is_checkpoint_path, looks_like_path

PLUGIN = Path(__file__).resolve().parents[2] / "plugin"  # this tree's package, also for subprocesses


def _imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('dreamcam')))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return set(out.stdout.split())


@pytest.mark.parametrize(("module", "above"), [
    ("dreamcam.models.paths", ["dreamcam.models.pipelines", "dreamcam.models.loading", "dreamcam.engine"]),
    ("dreamcam.models.pipelines", ["dreamcam.models.components", "dreamcam.models.loading", "dreamcam.engine"]),
    ("dreamcam.models.loading", ["dreamcam.engine", "dreamcam.backends"]),
    ("dreamcam.engine.stream", ["dreamcam.models.loading", "dreamcam.backends", "dreamcam.runtime"]),
])
def test_a_floor_does_not_import_the_floors_above(module, above):
    loaded = _imported_after(module)
    assert module in loaded
    assert not [m for m in loaded if any(m == a or m.startswith(a + ".") for a in above)]


def test_paths_are_told_from_hub_ids_before_anything_loads(tmp_path):
    assert looks_like_path("./model.safetensors") and looks_like_path("a/b/c") and not looks_like_path("owner/name")
    assert is_checkpoint_path("x.SAFETENSORS") and not is_checkpoint_path("owner/name")
    check_exists("VAE", "madebyollin/taesd")  # a hub id: not checked on disk
    with pytest.raises(ModelLoadError, match=r"LoRA path '\./nowhere.safetensors' does not exist; pass a "):
        check_exists("LoRA", "./nowhere.safetensors")
    truncated = tmp_path / "model.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ModelLoadError, match="model.safetensors is not a readable .safetensors file"):
        check_checkpoint_file(truncated)
