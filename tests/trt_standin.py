"""A stand-in for the `tensorrt` module's builder API, for CPU tests of `build_plan` / `ensure_plans`.

TensorRT cannot be installed on these machines (its libraries come from NVIDIA's own index, which
is out of reach here), so this stands in for the part of its Python API the build uses. It is not
an engine and runs nothing: it parses the real ONNX file with `onnx`, checks what the real builder
would refuse (an input without a profile shape, a rank or fixed size that differs from the graph's,
min > opt > max, a precision builder flag on a strongly typed network) and returns a plan of
placeholder bytes.

The enums follow the real bindings: the BuilderFlag members of TensorRT 11 are those of the
tensorrt_cu12_bindings 11.4.0.106 wheel (no FP16, BF16, INT8 or FP8: TensorRT 11 builds only
strongly typed networks, and keeps NetworkDefinitionCreationFlag.STRONGLY_TYPED, renumbered to 0,
but ignores it); TensorRT 10 still has the precision flags and both network modes.
"""

from __future__ import annotations

import enum
import json
import types
from pathlib import Path

import onnx

_TRT11_BUILDER_FLAGS = ("DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "EDITABLE_TIMING_CACHE", "TF32",
                        "SPARSE_WEIGHTS", "SAFETY_SCOPE", "DIRECT_IO", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME",
                        "ERROR_ON_TIMING_CACHE_MISS", "DISABLE_COMPILATION_CACHE", "STRIP_PLAN", "REFIT_IDENTICAL",
                        "WEIGHT_STREAMING", "REFIT_INDIVIDUAL", "STRICT_NANS", "MONITOR_MEMORY",
                        "DISTRIBUTIVE_INDEPENDENCE")
_TRT10_PRECISION_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                          "PREFER_PRECISION_CONSTRAINTS")


class NetworkDefinitionCreationFlag(enum.IntEnum):  # TensorRT 10's numbering
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1
    PREFER_AOT_PYTHON_PLUGINS = 2
    PREFER_JIT_PYTHON_PLUGINS = 3


# TensorRT 11 renumbered them (NvInfer.h of 11.1): STRONGLY_TYPED is 0 (kept, ignored), no EXPLICIT_BATCH
NetworkDefinitionCreationFlag11 = enum.IntEnum("NetworkDefinitionCreationFlag", {
    "STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2})


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8


class BuildRefused(RuntimeError):
    """What the real builder reports (and returns None for) when the network and profile disagree."""


_CACHE_MAGIC = b"trt-standin timing cache\n"


def make(version: str, gpu: str = "NVIDIA H100 80GB HBM3") -> types.ModuleType:
    """A `tensorrt` stand-in of the given version ("10.13.0.35", "11.4.0.106", ...) on the named GPU.

    Its timing cache works as the real one is documented to: `create_timing_cache(b"")` is a new
    cache, damaged bytes give None (the real call logs an error and returns a null cache),
    `set_timing_cache` returns False for a cache of another version or GPU (its header), and a
    build times only the layers the attached cache lacks and adds them to it. A layer's key here
    is its op type and attributes; TensorRT's also holds shapes and formats."""
    major = int(version.split(".")[0])
    flags = _TRT11_BUILDER_FLAGS + (_TRT10_PRECISION_FLAGS if major < 11 else ())
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags, start=0)
    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag if major < 11 else NetworkDefinitionCreationFlag11
    trt.DataType = DataType
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ("WORKSPACE", "DLA_MANAGED_SRAM"), start=0)
    trt.builds = []  # one record per build_serialized_network call

    class Logger:
        WARNING, INFO, ERROR = 2, 3, 1

        def __init__(self, min_severity: int = 2) -> None:
            self.min_severity = min_severity

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class ITimingCache:
        def __init__(self, header: dict, keys: set[str]) -> None:
            self.header, self.keys = header, set(keys)

        def serialize(self) -> bytes:
            return _CACHE_MAGIC + json.dumps({**self.header, "keys": sorted(self.keys)}).encode()

        def combine(self, other: ITimingCache, ignore_mismatch: bool) -> bool:
            if other.header != self.header and not ignore_mismatch:
                return False
            self.keys |= other.keys
            return True

        def reset(self) -> bool:
            self.keys.clear()
            return True

    class _Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: dict[str, tuple[int | None, ...]] = {}
            self.input_types: dict[str, str] = {}
            self.layer_keys: list[str] = []

    class OnnxParser:
        def __init__(self, network: _Network, logger: Logger) -> None:
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path: str) -> bool:
            model = onnx.load(path)
            onnx.checker.check_model(model)
            for i in model.graph.input:
                t = i.type.tensor_type
                self.network.inputs[i.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                                    for d in t.shape.dim)
                self.network.input_types[i.name] = onnx.TensorProto.DataType.Name(t.elem_type)
            self.network.layer_keys = [n.op_type + str(sorted((a.name, str(onnx.helper.get_attribute_value(a)))
                                                               for a in n.attribute))
                                       for n in model.graph.node if n.op_type != "Constant"]
            return True

        def get_error(self, i: int) -> str:
            raise IndexError(i)

    class _Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, name, lo, opt, hi) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class _Config:
        def __init__(self) -> None:
            self.flags: set = set()
            self.pools: dict = {}
            self.profiles: list[_Profile] = []
            self.progress_monitor = None
            self.timing_cache: ITimingCache | None = None

        def create_timing_cache(self, data: bytes) -> ITimingCache | None:
            data = bytes(data)
            if not data:
                return ITimingCache({"version": version, "gpu": gpu}, set())
            if not data.startswith(_CACHE_MAGIC):
                return None
            try:
                fields = json.loads(data[len(_CACHE_MAGIC):])
            except ValueError:
                return None
            keys = fields.pop("keys")
            return ITimingCache(fields, set(keys))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if cache.header != {"version": version, "gpu": gpu} and not ignore_mismatch:
                return False
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self.timing_cache

        def set_flag(self, flag) -> None:
            self.flags.add(flag)

        def set_memory_pool_limit(self, pool, size: int) -> None:
            self.pools[pool] = size

        def add_optimization_profile(self, profile: _Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> _Network:
            return _Network(flags)

        def create_builder_config(self) -> _Config:
            return _Config()

        def create_optimization_profile(self) -> _Profile:
            return _Profile()

        def build_serialized_network(self, network: _Network, config: _Config) -> bytes:
            strongly_typed = major >= 11 or network.flags & (1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            precision = {f.name for f in config.flags} & set(_TRT10_PRECISION_FLAGS)
            if strongly_typed and precision:
                raise BuildRefused(f"precision flags {sorted(precision)} on a strongly typed network")
            if len(config.profiles) != 1:
                raise BuildRefused(f"expected one optimisation profile, got {len(config.profiles)}")
            shapes = config.profiles[0].shapes
            for name, dims in network.inputs.items():
                if name not in shapes:
                    raise BuildRefused(f"input {name} {dims} has no profile shape")
                for s in shapes[name]:
                    if len(s) != len(dims) or any(d is not None and d != v for d, v in zip(dims, s)):
                        raise BuildRefused(f"profile shape {s} of {name} does not fit the graph's {dims}")
                lo, opt, hi = shapes[name]
                if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                    raise BuildRefused(f"profile of {name} is not min <= opt <= max: {shapes[name]}")
            extra = set(shapes) - set(network.inputs)
            if extra:
                raise BuildRefused(f"profile shapes for tensors the graph does not have: {sorted(extra)}")
            monitor = config.progress_monitor
            monitor.phase_start("Building engine", None, 2)
            for step in range(2):
                monitor.phase_start("Tactic selection", "Building engine", 3)
                for s in range(3):
                    assert monitor.step_complete("Tactic selection", s) is True
                monitor.phase_finish("Tactic selection")
                assert monitor.step_complete("Building engine", step) is True
            monitor.phase_finish("Building engine")
            cache = config.timing_cache
            layers = set(network.layer_keys)
            timed = layers - cache.keys if cache is not None else layers
            if cache is not None:
                cache.keys |= timed
            trt.builds.append({"flags": network.flags, "config_flags": set(config.flags), "shapes": dict(shapes),
                               "input_types": dict(network.input_types), "layers": len(layers),
                               "timed": len(timed)})
            return b"stand-in plan, not an engine"

    trt.Logger, trt.IProgressMonitor, trt.OnnxParser, trt.Builder = Logger, IProgressMonitor, OnnxParser, Builder
    trt.ITimingCache = ITimingCache
    return trt


def plan_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.plan"))
