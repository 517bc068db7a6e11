"""Portability of what `dreamcam run` tells a Mac user (macOS stood in for by sys.platform)."""

from __future__ import annotations

import sys

from dreamcam.cli.run_options import cpu_fallback_hint


def test_mac_without_mps_is_not_told_to_install_a_cuda_torch(monkeypatch):
    # an Intel Mac, or a torch without MPS: torch.version.cuda is None there as on a CPU-only build
    monkeypatch.setattr(sys, "platform", "darwin")
    hint = cpu_fallback_hint(cuda_build=None, mps=False)
    assert "runs on the CPU" in hint and "macOS has no CUDA" in hint
    assert "pip install" not in hint and "cu128" not in hint


def test_windows_cpu_only_torch_still_gets_the_cuda_install_line(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    assert "download.pytorch.org/whl/cu128" in cpu_fallback_hint(cuda_build=None, mps=False)
