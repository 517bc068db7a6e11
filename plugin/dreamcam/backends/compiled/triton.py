"""Whether torch.compile can make CUDA kernels here: Inductor writes them in Triton."""

from __future__ import annotations

import importlib.util


def triton_problem() -> str | None:
    """Why torch.compile cannot make CUDA kernels here, or None: PyTorch's Windows wheels come
    without Triton (pytorch/pytorch#136361), and Inductor writes its CUDA kernels in Triton."""
    if importlib.util.find_spec("triton") is not None:
        return None
    return "torch.compile needs Triton and this torch has none (the usual case on Windows): pip install triton-windows"
