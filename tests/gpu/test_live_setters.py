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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_the_prompt_encoder_runs_on_a_stream_of_its_own_and_its_result_lands():
    from dreamcam.control.controller import Controller
    from dreamcam.knobs import ParamStore

    e = StreamEngine(tiny_pipeline(seed=0, device="cuda", dtype=torch.float16), [35], 64, 64, cfg_type="none",
                     device="cuda", dtype=torch.float16)
    e.prepare("a cat", seed=2)
    streams = []
    encode = e.encode_prompt

    def spying_encode(prompt, negative):
        streams.append(torch.cuda.current_stream())
        return encode(prompt, negative)

    e.encode_prompt = spying_encode
    store = ParamStore()
    store.update({"prompt": "a cat", "transition": 0.0})
    store.take_changes()
    with Controller(e, store) as controller:
        store.set("prompt", "a dog")
        assert controller.wait_encoded(30.0)
        controller.apply()
        torch.cuda.synchronize()
        assert streams and all(s != torch.cuda.default_stream() for s in streams)
        want, _ = encode("a dog", "")
        assert torch.allclose(e.prompt_embeds.float(), want.float().expand_as(e.prompt_embeds), atol=1e-3)
