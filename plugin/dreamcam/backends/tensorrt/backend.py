"""The TensorRT backend: ONNX export, engine build, cached plans.

Three engines per model (UNet, TAESD encoder, TAESD decoder), each built once from the graphs of
`onnx_export` with one optimisation profile over a batch range (steps x frame buffer, RCFG rows
included) and a resolution range, so changing steps, strength, prompt or size inside the range
needs no rebuild. Plans are cached in `engines_dir()/tensorrt` under a name that encodes the model
hash, the profile ranges, the precision, the TensorRT version and the GPU; a cached plan skips
export and build. Builds share one timing cache per TensorRT version and GPU
(`timing_trt*_GPU.cache`), so a second model of the same architecture is built without timing its
kernels again. Inference uses the name-based I/O of TensorRT 10 and 11: `set_input_shape`,
`set_tensor_address` on pre-allocated torch buffers, `execute_async_v3` on the backend's CUDA
stream; the whole frame step is then captured in one CUDA graph, as in the compiled backend.

Precision comes from the graph, not from a builder flag: the networks are built strongly typed,
so an fp16 export (the modules' dtype on a GPU) gives an FP16 engine. TensorRT 11 builds only
strongly typed networks and has no `BuilderFlag.FP16` any more (checked against the
tensorrt_cu12_bindings 11.4.0.106 wheel); TensorRT 10 still has weak typing and the FP16 flag, and
dreamcam builds strongly typed there too (as NVIDIA's TensorRT 11 diffusion demo does). One change
from a weakly typed FP16 build: GroupNorm (exported as InstanceNormalization) now computes in fp16,
where TensorRT 10's weakly typed default was fp32; unmeasured until TensorRT runs on a lent GPU.

ControlNets (engine/controlnet.py): one engine per ControlNet (the scale an input, the residuals
outputs) and the UNet engine built from the graph with residual inputs, which the ControlNet
engines' outputs (summed in torch over several) feed; all inside the one captured frame graph.
With an SDXL model both take the pooled text embeddings and time ids as inputs too.

Requires the `tensorrt` package (10 or 11) and a CUDA GPU.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dreamcam.backends.cache import engines_dir
from dreamcam.backends.compiled.step import FramePipeline, GraphedStep, TinyVaeCalls, check_capturable, swap_modules
from dreamcam.backends.tensorrt.onnx_export import (
    BANK_CONTROL,
    SDXL_INPUTS,
    export_controlnet,
    export_unet,
    export_unet_bank,
    export_unet_residuals,
    export_vae_decoder,
    export_vae_encoder,
    residual_factors,
    residual_names,
    sdxl_widths,
    unet_input_names,
    unet_is_sdxl,
)
from dreamcam.engine.attention import MAX_BANK_FRAMES, layer_tokens
from dreamcam.engine.stream import StreamEngine
from dreamcam.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise DeviceError("the tensorrt backend needs TensorRT 10 or 11: pip install 'dreamcam[tensorrt]' "
                          "(or use --backend compiled)") from e
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise DeviceError(f"TensorRT {trt.__version__} is too old: the tensorrt backend needs 10 or 11")
    if major > 11:
        _warn_newer(trt.__version__)
    return trt


@functools.cache
def _warn_newer(version: str) -> None:  # once per process, not at every import_tensorrt()
    log.warning("TensorRT %s is newer than the 10 and 11 the tensorrt backend is written for; if a build "
                "or run fails: pip install 'tensorrt<12'", version)


def tensorrt_problem() -> str | None:
    """Why the tensorrt backend cannot run its TensorRT here (not installed, unsupported, broken),
    in one line with what to do; None where it can. Builds nothing."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed: pip install 'dreamcam[tensorrt]'"
    try:
        import_tensorrt()
    except DeviceError as e:
        return str(e)
    except Exception as e:  # a broken install (missing libraries) fails at import in many ways
        return f"TensorRT does not import: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return None


def tensorrt_version() -> str | None:
    """The version of the TensorRT the backend would run, or None where it cannot run one."""
    return None if tensorrt_problem() else import_tensorrt().__version__


@dataclass(frozen=True)
class Profile:
    """Ranges one engine serves: batch rows and image size in pixels (multiples of 8)."""

    batch: tuple[int, int, int]          # min, opt, max
    height: tuple[int, int, int]
    width: tuple[int, int, int]

    def tag(self) -> str:
        b, h, w = self.batch, self.height, self.width
        return f"b{b[0]}-{b[2]}_h{h[0]}-{h[2]}_w{w[0]}-{w[2]}"

    def shapes(self, name: str, channels: int, latent: bool) -> tuple[tuple[int, ...], ...]:
        s = 8 if latent else 1
        return tuple((self.batch[i], channels, self.height[i] // s, self.width[i] // s) for i in range(3))


def default_profiles(engine: StreamEngine, *, min_px: int = 256, max_px: int = 1024) -> dict[str, Profile]:
    """Batch 1..max(8, UNet batch) around the engine's own; sizes min_px..max_px around its own."""
    h, w = engine.height, engine.width
    lo, hi = min(min_px, h, w), max(max_px, h, w)
    rows = engine.unet_batch_size
    f = engine.frame_buffer_size
    return {
        "unet": Profile((1, rows, max(8, rows)), (lo, h, hi), (lo, w, hi)),
        "vae_encoder": Profile((1, f, max(4, f)), (lo, h, hi), (lo, w, hi)),
        "vae_decoder": Profile((1, f, max(4, f)), (lo, h, hi), (lo, w, hi)),
    }


def model_hash(*modules: torch.nn.Module) -> str:
    """sha1 over every parameter and buffer (names, shapes, dtypes, bytes): 12 hex digits."""
    h = hashlib.sha1()
    for m in modules:
        for name, t in list(m.state_dict().items()):
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


PRECISIONS = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def _gpu_tag(gpu: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-")


def plan_name(part: str, mhash: str, profile: Profile, trt_version: str, gpu: str, precision: str = "fp16") -> str:
    return f"{part}_{mhash}_{profile.tag()}_{precision}_trt{trt_version}_{_gpu_tag(gpu)}.plan"


def network_flags(trt) -> int:
    """Strongly typed: each layer runs in the type the ONNX graph gives it (TensorRT 11 ignores the
    flag, every network is strongly typed there; TensorRT 10 needs it)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


# TensorRT's DataType member names -> torch dtypes (trt.nptype has no bfloat16)
_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
                 "UINT8": torch.uint8, "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool}


def torch_dtype(trt_dtype: Any) -> torch.dtype:
    """A TensorRT DataType (`DataType.HALF`) -> the torch dtype of a buffer for it."""
    name = getattr(trt_dtype, "name", None) or str(trt_dtype).rsplit(".", 1)[-1]
    if name not in _TORCH_DTYPES:
        raise DeviceError(f"a TensorRT engine tensor of type {trt_dtype} has no torch buffer type; "
                          f"dreamcam binds {', '.join(_TORCH_DTYPES)}")
    return _TORCH_DTYPES[name]


def _progress_monitor(trt):
    class Progress(trt.IProgressMonitor):
        """Prints the builder's phases as indented progress lines on stderr."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._steps: dict[str, int] = {}
            self._depth: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self._depth[phase_name] = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self._steps[phase_name] = num_steps

        def step_complete(self, phase_name, step):
            n = self._steps.get(phase_name, 1)
            bar = "#" * int(20 * (step + 1) / max(n, 1))
            sys.stderr.write(f"\r{'  ' * self._depth.get(phase_name, 0)}{phase_name[:40]:40s} [{bar:20s}] {step + 1}/{n}")
            sys.stderr.flush()
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            sys.stderr.write("\n" if self._depth.get(phase_name, 0) == 0 else "")

    return Progress()


def timing_cache_name(trt_version: str, gpu: str) -> str:
    """One timing cache per TensorRT version and GPU: TensorRT refuses another's (its header says which)."""
    return f"timing_trt{trt_version}_{_gpu_tag(gpu)}.cache"


def _saved_timing_cache(config: Any, path: Path) -> Any | None:
    """The cache saved at `path`, attached to `config`; None where there is none, or (with a
    warning) where it is unreadable or from another TensorRT/GPU."""
    if not path.exists():
        return None
    try:
        cache = config.create_timing_cache(path.read_bytes())  # a damaged file: None or an error
    except Exception as e:  # noqa: BLE001 - TensorRT raises its own error types
        log.warning("TensorRT could not read the timing cache %s (%s); starting a new one", path, e)
        return None
    if cache is None:
        log.warning("TensorRT could not read the timing cache %s; starting a new one", path)
        return None
    if not config.set_timing_cache(cache, False):
        log.warning("the timing cache %s is from another TensorRT or GPU; starting a new one", path)
        return None
    return cache


def _attach_timing_cache(config: Any, path: Path) -> Any:
    """The builder's kernel timings from earlier builds on this GPU (another model, another size, a
    LoRA fused in): layers already timed are not timed again, which is most of a rebuild's minutes."""
    cache = _saved_timing_cache(config, path)
    if cache is None:
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache  # the cache must outlive the build


def _write_atomic(path: Path, data: bytes) -> None:
    """A build beside this one reads the old file or the new, never half of one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    tmp.write_bytes(data)
    tmp.replace(path)


def build_plan(onnx_path: Path, plan_path: Path, inputs: dict[str, tuple[tuple[int, ...], ...]], *,
               workspace_gib: float = 8.0, timing_cache: Path | None = None) -> Path:
    """ONNX -> serialized TensorRT engine with one optimisation profile (min, opt, max per input).

    Strongly typed, so the engine's precision is the graph's (fp16 for an fp16 export). With
    `timing_cache`, the builder starts from the kernel timings saved there and saves its own back."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeviceError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    monitor = _progress_monitor(trt)
    config.progress_monitor = monitor
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in inputs.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if timing_cache is not None:
        cache = _attach_timing_cache(config, timing_cache)  # noqa: F841 - must outlive the build
    log.info("building %s (this takes minutes once; cached afterwards)", plan_path.name)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise DeviceError(f"TensorRT failed to build {plan_path.name}; see the TensorRT messages above")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    if timing_cache is not None:
        _write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    _write_atomic(plan_path, bytes(plan))
    log.info("built %s in %.0f s", plan_path.name, time.perf_counter() - t0)
    return plan_path


class TrtEngine:
    """One plan file: load, bind pre-allocated buffers by tensor name, run on a stream."""

    def __init__(self, plan_path: Path) -> None:
        trt = import_tensorrt()
        self._trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise DeviceError(f"TensorRT could not load {plan_path}: delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.buffers: dict[str, torch.Tensor] = {}

    def allocate(self, input_shapes: dict[str, tuple[int, ...]], device: torch.device) -> None:
        """Set input shapes, allocate every I/O buffer once and bind it by name."""
        for name in self.names:
            if self.engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT:
                if not self.context.set_input_shape(name, input_shapes[name]):
                    raise ConfigError(f"shape {input_shapes[name]} of {name} is outside the engine's profile: "
                                      "rebuild with dreamcam build-engines for this size")
        for name in self.names:
            shape = tuple(self.context.get_tensor_shape(name))
            self.buffers[name] = torch.empty(shape, dtype=torch_dtype(self.engine.get_tensor_dtype(name)), device=device)
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())

    def infer(self, stream: torch.cuda.Stream) -> None:
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise DeviceError("TensorRT execute_async_v3 failed; see the TensorRT messages above")


class TrtCall:
    """Callable with the engine's UNet / encoder / decoder call signature, backed by a TrtEngine.

    Positional arguments fill the first inputs in order; `encoder_hidden_states` and SDXL's
    `added_cond_kwargs` ({"text_embeds", "time_ids"}, the engine's `unet_conditioning`) fill
    the inputs of those names. Each value is copied into the engine's bound buffer of that name."""

    def __init__(self, trt_engine: TrtEngine, inputs: list[str], output: str) -> None:
        self.trt, self.inputs, self.output = trt_engine, inputs, output

    def feeds(self, args: tuple[torch.Tensor, ...], encoder_hidden_states: torch.Tensor | None = None,
              added_cond_kwargs: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The call's tensors by input name; every input of the engine must get one."""
        values = dict(zip(self.inputs, args))
        if encoder_hidden_states is not None:
            values["encoder_hidden_states"] = encoder_hidden_states
        values.update(added_cond_kwargs or {})
        if set(values) != set(self.inputs):
            raise ConfigError(f"the TensorRT engine takes {', '.join(self.inputs)}; the call gave {', '.join(values)} "
                              "(an SDXL engine for an SD model or the reverse? delete the plan to rebuild)")
        return values

    def __call__(self, *args: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 added_cond_kwargs: dict[str, torch.Tensor] | None = None, return_dict: bool = False):
        for name, value in self.feeds(args, encoder_hidden_states, added_cond_kwargs).items():
            self.trt.buffers[name].copy_(value)
        self.trt.infer(torch.cuda.current_stream())
        out = self.trt.buffers[self.output]
        return (out,) if "encoder_hidden_states" in self.inputs else out


def unet_profile_shapes(unet: Any, prof: Profile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of every UNet input over the profile: the latent batch and size,
    the timestep and text embeddings per batch row (SDXL: pooled embeddings and time ids too)."""
    rows = [prof.batch[i] for i in range(3)]
    shapes = {
        "sample": prof.shapes("sample", 4, True),
        "timestep": tuple((b,) for b in rows),
        "encoder_hidden_states": tuple((b, 77, unet.config.cross_attention_dim) for b in rows),
    }
    if unet_is_sdxl(unet):
        width, n_ids = sdxl_widths(unet)
        shapes["text_embeds"] = tuple((b, width) for b in rows)
        shapes["time_ids"] = tuple((b, n_ids) for b in rows)
    return shapes


def unet_input_shapes(engine: StreamEngine) -> dict[str, tuple[int, ...]]:
    """The shapes the engine's UNet calls bind: its batch rows, latent size and conditioning."""
    rows = engine.unet_batch_size
    shapes = {"sample": (rows, 4, engine.latent_height, engine.latent_width), "timestep": (rows,)}
    cond = engine.unet_conditioning
    shapes["encoder_hidden_states"] = tuple(cond["encoder_hidden_states"].shape)
    for name, t in (cond.get("added_cond_kwargs") or {}).items():
        shapes[name] = tuple(t.shape)
    return shapes


def bank_profile_shapes(engine: StreamEngine, prof: Profile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Profile shapes (min, opt, max) of the `unet_bank` graph's cached-attention inputs: the
    control tensors, and every layer's bank (4, B, tokens at that profile size, width)."""
    bank = engine.attention_bank
    n_blocks = len(engine.pipe.unet.config.block_out_channels)
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {name: ((MAX_BANK_FRAMES,),) * 3 for name in BANK_CONTROL}
    shapes["attn_fusion"] = ((1,),) * 3
    for i, layer in enumerate(bank.layers):
        dims = []
        for j in range(3):
            tokens = layer_tokens(layer.name, n_blocks, (prof.height[j] // 8, prof.width[j] // 8))
            dims.append((MAX_BANK_FRAMES, prof.batch[j], tokens, layer.width))
        shapes[f"bank_k{i}"] = shapes[f"bank_v{i}"] = tuple(dims)
        if layer.o is not None:
            shapes[f"bank_o{i}"] = tuple((m, b, t, layer.o.shape[-1]) for m, b, t, _ in dims)
    return shapes


def _down(n: int, factor: int) -> int:
    """A latent side after the UNet's stride-2 downsamplers (each rounds up) for this factor."""
    while factor > 1:
        n, factor = (n + 1) // 2, factor // 2
    return n


def residual_shapes(unet: Any, rows: int, latent_h: int, latent_w: int) -> dict[str, tuple[int, ...]]:
    """The ControlNet residual tensors by name (down_i, mid) at this batch and latent size."""
    factors = residual_factors(unet)
    return {name: (rows, c, _down(latent_h, f), _down(latent_w, f))
            for name, (c, f) in zip(residual_names(len(factors) - 1), factors)}


def ensure_plans(engine: StreamEngine, folder: Path | None = None) -> dict[str, Path]:
    """Export and build any plan missing from the cache for this engine's model; returns the paths.

    With cached attention on, the UNet's plan is `unet_bank` (the bank as engine inputs/outputs),
    still returned under "unet".
    With ControlNets (engine.control) the UNet plan is "unet_residuals" (residual inputs) and each
    ControlNet has its own plan, "controlnet_0", "controlnet_1", ... (keyed by its own hash)."""
    trt = import_tensorrt()
    folder = Path(folder or engines_dir() / "tensorrt")
    mhash = model_hash(engine.unet, engine.vae)
    profiles = default_profiles(engine)
    gpu = torch.cuda.get_device_name(engine.device)
    precision = PRECISIONS[engine.dtype]  # the export's dtype, which a strongly typed build keeps
    banked = engine.attention_active
    control = getattr(engine, "control", None)
    sdxl = unet_is_sdxl(engine.unet)
    if banked and sdxl:
        raise ConfigError("cached attention (--attn-bank) runs on TensorRT for SD 1.x/2.x models only: "
                          "use --backend compiled for SDXL with the bank, or --attn-bank 0")
    if control is not None and banked:
        raise ConfigError("ControlNet on TensorRT runs without cached attention: "
                          "use --backend compiled for both, or drop --controlnet or --attn-bank")
    unet_part = "unet" if control is None else "unet_residuals"
    unet_export = (lambda _module, path: export_unet_bank(engine, path)) if banked else export_unet
    specs = {
        unet_part: ({"sample": (4, True), "timestep": None, "encoder_hidden_states": None},
                    unet_export if control is None else export_unet_residuals, engine.unet, mhash),
        "vae_encoder": ({"images": (3, False)}, export_vae_encoder, engine.vae, mhash),
        "vae_decoder": ({"latents": (4, True)}, export_vae_decoder, engine.vae, mhash),
    }
    for i, unit in enumerate(control.units if control is not None else []):
        def export_cn(net, path, _unet=engine.unet):
            return export_controlnet(net, _unet, path)

        specs[f"controlnet_{i}"] = ({"sample": (4, True), "timestep": None, "encoder_hidden_states": None,
                                     "controlnet_cond": (3, False)}, export_cn, unit.model, model_hash(unit.model))
    plans = {}
    for part, (inputs, export, module, h) in specs.items():
        prof = profiles["unet" if part.startswith(("unet", "controlnet")) else part]
        stem = "unet_bank" if part == "unet" and banked else part
        plan = folder / plan_name(stem, h, prof, trt.__version__, gpu, precision)
        if not plan.exists():
            onnx_path = folder / "onnx" / f"{stem}_{h}.onnx"
            if not onnx_path.exists():
                export(module, onnx_path)
            if part == "unet":
                shapes = unet_profile_shapes(engine.unet, prof)
                if banked:
                    shapes.update(bank_profile_shapes(engine, prof))
            else:
                shapes = {name: prof.shapes(name, *spec) for name, spec in inputs.items() if spec is not None}
            if part == "unet_residuals" or part.startswith("controlnet"):
                shapes.update(unet_profile_shapes(module, prof))  # an SDXL one's text_embeds, time_ids too
            if part == "unet_residuals":
                per = [residual_shapes(engine.unet, prof.batch[i], prof.height[i] // 8, prof.width[i] // 8)
                       for i in range(3)]
                shapes.update({name: tuple(p[name] for p in per) for name in per[0]})
            if part.startswith("controlnet"):
                shapes["conditioning_scale"] = ((1,), (1,), (1,))
            build_plan(onnx_path, plan, shapes, timing_cache=folder / timing_cache_name(trt.__version__, gpu))
        plans[part] = plan
    return plans


class _TrtBankCall:
    """The `unet_bank` engine with the UNet's call signature. Its bank inputs are bound to the
    engine's own bank tensors, its bank outputs to buffers of the same shapes; after each call
    the outputs are copied back into the bank (a device copy inside the frame's CUDA graph, so
    one graph serves every frame: alternating the bindings would need one graph per parity)."""

    def __init__(self, trt_engine: TrtEngine, engine: StreamEngine) -> None:
        self.trt = trt_engine
        bank = engine.attention_bank
        self.control = bank.control
        self.pairs = []
        for name, tensor in zip(bank.io_names(), bank.io_tensors()):
            trt_engine.buffers[name] = tensor
            trt_engine.context.set_tensor_address(name, tensor.data_ptr())
            self.pairs.append((tensor, trt_engine.buffers[name + "_out"]))

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 return_dict: bool = False):
        buf, c = self.trt.buffers, self.control
        buf["sample"].copy_(sample)
        buf["timestep"].copy_(timestep)
        buf["encoder_hidden_states"].copy_(encoder_hidden_states)
        buf["attn_mask"].copy_(c.mask)
        buf["attn_write"].copy_(c.write)
        buf["attn_fusion"].copy_(c.fusion.reshape(1))
        self.trt.infer(torch.cuda.current_stream())
        for bank, out in self.pairs:
            bank.copy_(out)
        return (buf["noise_pred"],)


def copy_added(trt_engine: TrtEngine, added_cond_kwargs: dict[str, torch.Tensor] | None) -> None:
    """SDXL's added conditioning into the engine's inputs of those names (text_embeds, time_ids);
    refused in one line where the call's and the engine's inputs disagree (SDXL vs not)."""
    given = set(added_cond_kwargs or {})
    wanted = {n for n in SDXL_INPUTS if n in trt_engine.names}
    if given != wanted:
        raise ConfigError(f"the TensorRT engine takes {', '.join(sorted(wanted)) or 'no added conditioning'}; the "
                          f"call gave {', '.join(sorted(given)) or 'none'} (an SDXL engine for an SD model or the "
                          "reverse? delete the plan to rebuild)")
    for name in wanted:
        trt_engine.buffers[name].copy_(added_cond_kwargs[name])


class _TrtResidualUNetCall:
    """The UNet call with ControlNet residual keyword arguments, backed by the unet_residuals
    engine: the residuals are copied into its input buffers (zeros when none are given), SDXL's
    `added_cond_kwargs` into its text_embeds and time_ids."""

    def __init__(self, trt_engine: TrtEngine, names: list[str]) -> None:
        self.trt, self.names = trt_engine, names

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
                 added_cond_kwargs: dict[str, torch.Tensor] | None = None,
                 down_block_additional_residuals: list[torch.Tensor] | None = None,
                 mid_block_additional_residual: torch.Tensor | None = None, return_dict: bool = False):
        b = self.trt.buffers
        b["sample"].copy_(sample)
        b["timestep"].copy_(timestep)
        b["encoder_hidden_states"].copy_(encoder_hidden_states)
        copy_added(self.trt, added_cond_kwargs)
        residuals = (None if down_block_additional_residuals is None
                     else [*down_block_additional_residuals, mid_block_additional_residual])
        for i, name in enumerate(self.names):
            if residuals is None:
                b[name].zero_()
            else:
                b[name].copy_(residuals[i])
        self.trt.infer(torch.cuda.current_stream())
        return (b["noise_pred"],)


class _TrtControlNetCall:
    """A ControlNetModel's call (sample, timestep, encoder_hidden_states, controlnet_cond,
    conditioning_scale, SDXL's added_cond_kwargs) -> (down residuals, mid), backed by a controlnet
    engine. The results are the engine's output buffers: used (summed, copied into the UNet's
    inputs) before its next run."""

    def __init__(self, trt_engine: TrtEngine, names: list[str]) -> None:
        self.trt, self.names = trt_engine, names

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
                 controlnet_cond: torch.Tensor, conditioning_scale: torch.Tensor,
                 added_cond_kwargs: dict[str, torch.Tensor] | None = None, return_dict: bool = False):
        b = self.trt.buffers
        b["sample"].copy_(sample)
        b["timestep"].copy_(timestep)
        b["encoder_hidden_states"].copy_(encoder_hidden_states)
        copy_added(self.trt, added_cond_kwargs)
        b["controlnet_cond"].copy_(controlnet_cond)
        b["conditioning_scale"].copy_(torch.as_tensor(conditioning_scale).reshape(1))
        self.trt.infer(torch.cuda.current_stream())
        return [b[n] for n in self.names[:-1]], b[self.names[-1]]


class TensorRTBackend(FramePipeline):
    """CUDA + TensorRT 10 or 11. Same contract and frame path as the compiled backend."""

    name = "tensorrt"

    def __init__(self, engine: StreamEngine, *, cuda_graph: bool = True, folder: str | None = None) -> None:
        if engine.device.type != "cuda":
            raise DeviceError(f"the tensorrt backend needs a CUDA device; the engine is on {engine.device}")
        check_capturable(engine, self.name)
        self.engine = engine
        self._closed = False
        t0 = time.perf_counter()
        plans = ensure_plans(engine, Path(folder) if folder else None)
        dev, f = engine.device, engine.frame_buffer_size
        h, w = engine.latent_height, engine.latent_width
        rows = engine.unet_batch_size
        control = engine.control
        unet_part = "unet" if control is None else "unet_residuals"
        unet, enc, dec = (TrtEngine(plans[p]) for p in (unet_part, "vae_encoder", "vae_decoder"))
        unet_shapes = unet_input_shapes(engine)
        if engine.attention_active:  # cached attention: the bank rides along as engine inputs/outputs
            bank = engine.attention_bank
            unet_shapes.update({"attn_mask": (MAX_BANK_FRAMES,), "attn_write": (MAX_BANK_FRAMES,), "attn_fusion": (1,)})
            unet_shapes.update({n: tuple(t.shape) for n, t in zip(bank.io_names(), bank.io_tensors())})
        residuals = residual_shapes(engine.unet, rows, h, w) if control is not None else {}
        unet.allocate({**unet_shapes, **residuals}, dev)
        enc.allocate({"images": (f, 3, engine.height, engine.width)}, dev)
        dec.allocate({"latents": (f, 4, h, w)}, dev)
        nets = [TrtEngine(plans[f"controlnet_{i}"]) for i in range(len(control.units))] if control is not None else []
        for net in nets:
            net.allocate({**unet_shapes, "controlnet_cond": (rows, 3, engine.height, engine.width),
                          "conditioning_scale": (1,)}, dev)
        self._trt = (unet, enc, dec, *nets)
        if control is not None:
            # ControlNet engines feed the UNet engine's residual inputs; every ControlNet runs each
            # frame (its scale is an engine input the captured graph reads)
            unet_call = _TrtResidualUNetCall(unet, list(residuals))
            control.run_by([_TrtControlNetCall(net, list(residuals)) for net in nets])
        elif engine.attention_active:
            unet_call = _TrtBankCall(unet, engine)
        else:
            unet_call = TrtCall(unet, unet_input_names(engine.unet), "noise_pred")
        vae = TinyVaeCalls(engine.vae, TrtCall(enc, ["images"], "latents"), TrtCall(dec, ["latents"], "images"))
        self._swap = swap_modules(engine, unet_call, vae)
        self._swap.__enter__()

        try:
            self._run = GraphedStep(engine, warmup=1, cuda_graph=cuda_graph, backend=self.name)
        except BaseException:  # put the engine's own modules back: `auto` falls back to eager on them
            self._release()
            raise
        self.startup_s = round(time.perf_counter() - t0, 2)
        log.info("tensorrt backend ready in %.1f s", self.startup_s)

    def _release(self) -> None:
        if self.engine.control is not None:
            self.engine.control.release_calls()
        self._swap.__exit__(None, None, None)
        self.engine.release_attention_from_graph()
        self._trt = ()
