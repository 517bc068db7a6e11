"""Every real backend class satisfies the `Backend` Protocol the runner and benchmarks are typed with.

Checked two ways: statically, member by member with the Protocol's signatures, for each class the
registry names (eager, compiled, tensorrt: the GPU ones cannot be built here); and with
`isinstance` on real instances: the eager backend here, the compiled backend where a GPU is.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from dreamcam import StreamEngine, tiny_pipeline
from dreamcam.backends import Backend, backend_spec, make_backend, registered
from dreamcam.backends.base import resolve
from dreamcam.backends.compiled.backend import CompiledBackend
from dreamcam.backends.eager import EagerBackend
from dreamcam.backends.tensorrt.backend import TensorRTBackend

MEMBERS = [n for n, v in vars(Backend).items()
           if callable(v) and (not n.startswith("_") or n in ("__enter__", "__exit__"))]


def _params(fn) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def test_the_protocol_is_the_contract_the_runner_uses():
    assert sorted(MEMBERS) == ["__enter__", "__exit__", "close", "collect", "fence", "process", "submit"]
    assert isinstance(inspect.getattr_static(Backend, "overlaps"), property)
    assert Backend.__annotations__["name"] == "str"


def test_the_registry_names_the_three_built_in_classes():
    classes = {spec.name: resolve(spec.factory) for spec in registered()}
    assert classes == {"eager": EagerBackend, "compiled": CompiledBackend, "tensorrt": TensorRTBackend}


@pytest.mark.parametrize("cls", [EagerBackend, CompiledBackend, TensorRTBackend], ids=lambda c: c.__name__)
def test_each_backend_class_has_every_member_with_the_protocols_signature(cls):
    assert inspect.getattr_static(cls, "name") == backend_spec(cls.name).name
    overlaps = inspect.getattr_static(cls, "overlaps")
    assert isinstance(overlaps, (property, bool)), f"{cls.__name__}.overlaps is {overlaps!r}"
    for member in MEMBERS:
        assert callable(getattr(cls, member, None)), f"{cls.__name__} has no {member}()"
        assert _params(getattr(cls, member)) == _params(getattr(Backend, member)), f"{cls.__name__}.{member}"


def test_a_real_eager_backend_is_a_backend(tiny_pipe):
    engine = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="none", device="cpu", dtype=torch.float32)
    engine.prepare("a cat")
    with make_backend("eager", engine) as b:
        assert isinstance(b, Backend)
        assert b.process(np.zeros((64, 64, 3), np.uint8)).shape == (64, 64, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_a_real_compiled_backend_is_a_backend():
    engine = StreamEngine(tiny_pipeline(0, device="cuda", dtype=torch.float16), [35], 64, 64, cfg_type="none",
                          device="cuda", dtype=torch.float16)
    engine.prepare("a cat")
    with make_backend("compiled", engine, compile=False) as b:
        assert isinstance(b, Backend) and b.overlaps
        b.submit(np.zeros((48, 80, 3), np.uint8))
        assert b.collect().shape == (64, 64, 3)
