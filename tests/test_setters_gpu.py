"""Live setters on a CUDA engine: the host never waits for the GPU (frames may be in flight)."""

import pytest
import torch

from dreamcam import StreamEngine, tiny_pipeline


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_live_setters_do_not_synchronise_and_write_what_the_cpu_engine_writes():
    engines = {}
    for device, dtype in (("cuda", torch.float16), ("cpu", torch.float32)):
        e = StreamEngine(tiny_pipeline(seed=0, device=device, dtype=dtype), [20, 35], 64, 64, cfg_type="self",
                         device=device, dtype=dtype)
        e.prepare("a cat", seed=2)
        engines[device] = e
    gpu = engines["cuda"]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call in a setter raises
    try:
        gpu.set_strength(0.3)
        gpu.set_seed(7)
        gpu.set_guidance(1.5)
        gpu.set_delta(0.8)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu = engines["cpu"]
    cpu.set_strength(0.3)
    cpu.set_seed(7)
    for name in ("alpha_prod_t_sqrt", "beta_prod_t_sqrt", "c_skip", "c_out", "_timesteps", "init_noise"):
        a, b = getattr(gpu, name).float().cpu(), getattr(cpu, name).float()
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3), name
