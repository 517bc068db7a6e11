import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_pipe():
    """One random-weight tiny pipeline for the whole run (tests must not change its weights)."""
    from dreamcam import tiny_pipeline

    return tiny_pipeline(seed=0)


@pytest.fixture(scope="session")
def toy_pipe():
    """The trained toy model shipped in the package (`load_pipeline("toy")`), once per run; tests
    must not change its weights."""
    from dreamcam import load_pipeline

    return load_pipeline("toy", device="cpu", progress=False)


def random_frames(n: int, height: int, width: int, seed: int = 5) -> list[torch.Tensor]:
    """n different float frames (1, 3, H, W) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand((1, 3, height, width), generator=g) * 2 - 1 for _ in range(n)]
