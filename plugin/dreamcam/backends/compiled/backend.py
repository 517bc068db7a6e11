"""The compiled backend: torch.compile'd UNet and tiny VAE, the whole frame step in one CUDA graph.

One `process(frame)` is: copy the frame into a pinned host buffer, upload it on the backend's
own CUDA stream, run the ControlNets' preprocessors (if any; outside the graph, into buffers it
reads), replay the captured graph (uint8 -> float, VAE encode, UNet stream batch, RCFG
and LCM step, VAE decode, float -> uint8), download into a pinned host buffer, wait. The graph
reads the engine's pre-allocated tensors (prompt embeddings, schedule, noise, guidance), so the
engine's setters (set_prompt, set_strength, set_guidance, set_delta, set_seed) take effect at
the next frame with no re-capture and no recompile.

ControlNets (engine/controlnet.py) run inside the same graph as the UNet, each torch.compile'd;
their scales are device tensors, so a scale change needs no re-capture (and a scale of 0 still
costs the ControlNet's time here, unlike the eager backend, which skips it).

The compile cache (Inductor's FX-graph and kernel caches) lives under `engines_dir()/torch_compile`,
so the second start of the same model and size skips most of the compile time.

Speed knobs (`StepModules`, which also runs on a CPU engine so the knobs are tested there):

- `fuse_qkv`: one matmul for the q/k/v (self-attention) and k/v (cross-attention) projections of
  every UNet attention (diffusers' `fuse_qkv_projections`). TAESD has no attention.
- `inductor`: a preset of Inductor settings (`INDUCTOR_PRESETS`). They are passed as
  `torch.compile(options=...)`, so they apply to these modules' compiles only, not process-wide.
  "tuned" is the set diffusers' torch.compile guide recommends for UNets; "freeze" constant-folds
  the weights into the graph (inference only; a later weight change, e.g. a LoRA, is not seen).
- `compile_mode`: "default" or "max-autotune-no-cudagraphs" (we capture our own CUDA graph, so
  Inductor's cudagraph modes are never wanted). Autotuning takes minutes per shape on first start.
- `compile_scope`: "whole" compiles the UNet, encoder and decoder each as one graph; "blocks"
  compiles each repeated block (`BLOCK_CLASSES`) separately (regional compilation): blocks of
  the same shape share one compiled graph, so the first start compiles far less, while the
  glue between blocks runs eager (still inside the one CUDA graph, so it costs no launches).
- `fp8_linear`: the UNet's transformer-block projections as FP8 matmuls with static scales
  calibrated at start (backends/compiled/fp8.py; Ada/Hopper; frames differ from fp16 by a few levels).
- `cudnn_exhaustive`: cuDNN's benchmark tries every convolution algorithm, not its first 10
  (`torch.backends.cudnn.benchmark_limit = 0`, process-wide until close); a longer first frame.

Frame paths (`CompiledBackend`): `GraphedStep` by default; `overlap_stages` runs the step as
three graphs on three streams (backends/compiled/staged.py); `parallel_frames` gives each of the two frames
in flight its own graph and stream where frames carry no state (backends/compiled/parallel.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import torch

from dreamcam.backends.cache import engines_dir
from dreamcam.backends.compiled.fp8 import Fp8Linears, check_fp8_device
from dreamcam.backends.compiled.parallel import ParallelStep, check_parallel
from dreamcam.backends.compiled.staged import StagedStep
from dreamcam.backends.compiled.step import (
    FramePipeline,
    GraphedStep,
    TinyVaeCalls,
    check_capturable,
    swap_modules,
)
from dreamcam.backends.compiled.triton import triton_problem
from dreamcam.backends.options import COMPILE_MODES, COMPILE_SCOPES, INDUCTOR_PRESETS
from dreamcam.engine.stream import StreamEngine
from dreamcam.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

# the repeated blocks of the SD UNet and of TAESD, compiled one by one with compile_scope="blocks"
BLOCK_CLASSES = ("ResnetBlock2D", "Transformer2DModel", "AutoencoderTinyBlock")
# distinct block shapes in one model (sd-turbo's UNet has about 20): dynamo's default limit of 8
# compiled versions per function would silently leave the rest eager
BLOCK_RECOMPILE_LIMIT = 64


def use_compile_cache(path: str | os.PathLike | None = None) -> str:
    """Point Inductor's on-disk caches at `path` (default engines/torch_compile) unless the user
    already set TORCHINDUCTOR_CACHE_DIR; returns the folder used.

    Importing torch._dynamo (diffusers does) sets the variable to torch's default folder
    (/tmp/torchinductor_USER), so that value counts as not set by the user."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    user_set = current is not None and os.path.abspath(current) != os.path.abspath(default_cache_dir())
    if path is not None or not user_set:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path or engines_dir() / "torch_compile")
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _choice(flag: str, value: Any, choices: tuple[str, ...] | dict) -> str:
    if value not in choices:
        raise ConfigError(f"{flag} must be one of {', '.join(choices)}; got {value!r}")
    return value


def inductor_options(mode: str = "default", inductor: str = "default") -> dict[str, bool]:
    """The Inductor settings of a compile mode plus a preset, as one `torch.compile(options=)`
    dict (torch.compile takes a mode or options, not both)."""
    import torch._inductor

    _choice("--compile-mode", mode, COMPILE_MODES)
    _choice("--inductor", inductor, INDUCTOR_PRESETS)
    return {**torch._inductor.list_mode_options(mode), **INDUCTOR_PRESETS[inductor]}


class StepModules:
    """The engine's UNet and TAESD encoder/decoder as the frame step runs them, knobs applied.

    Args:
        engine: a prepared StreamEngine with a tiny VAE, on any device (CPU too: that is how
            the knobs are tested without a GPU).
        compile: torch.compile the modules; False leaves them eager (fuse_qkv still applies).
        fuse_qkv, inductor, compile_mode, compile_scope, fp8_linear: see the module docstring
            (fp8_linear calibrates here, running a few frames through the engine eagerly).

    `unet` and `vae` are the callables to swap into the engine. Compilation itself happens at the
    first call: run it inside `compiling()`. fuse_qkv, fp8_linear and the "blocks" scope change
    the shared pipeline modules while open; `close()` (idempotent) puts them back.
    """

    def __init__(self, engine: StreamEngine, *, compile: bool = True, fuse_qkv: bool = False, inductor: str = "default",
                 compile_mode: str = "default", compile_scope: str = "whole", fp8_linear: bool = False) -> None:
        # 1. Check inputs
        options = inductor_options(compile_mode, inductor)
        _choice("--compile-scope", compile_scope, COMPILE_SCOPES)
        if not compile and (options or compile_scope != "whole"):
            raise ConfigError("--inductor, --compile-mode and --compile-scope tune torch.compile; "
                              "drop them or drop --no-compile")
        self.compile_options = options
        self.knobs = {"compile": compile, "fuse_qkv": fuse_qkv, "inductor": inductor,
                      "compile_mode": compile_mode, "compile_scope": compile_scope, "fp8_linear": fp8_linear}
        if fp8_linear:
            check_fp8_device(engine.device)
        self._unet_module, self._vae = engine.unet, engine.vae
        self._swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
        self._fused = False
        self._fp8: Fp8Linears | None = None
        self._closed = False
        self.compiled_blocks = 0
        self._scope = compile_scope if compile else None

        try:
            self.unet, self.vae = self._prepare(engine, compile, fuse_qkv, fp8_linear, compile_scope, options)
        except BaseException:  # the shared UNet may already be fused, FP8 or block-compiled: put it back
            self.close()
            raise

    def _prepare(self, engine: StreamEngine, compile: bool, fuse_qkv: bool, fp8_linear: bool, compile_scope: str,
                 options: dict[str, bool]) -> tuple[Any, TinyVaeCalls]:
        # 2. Fused projections (before compiling: the graph must see the fused layers)
        if fuse_qkv:
            self._unet_module.fuse_qkv_projections()
            self._fused = True

        # 2b. FP8 projections, calibrated on the eager modules (after fusing: to_qkv goes FP8 too)
        if fp8_linear:
            self._fp8 = Fp8Linears(self._unet_module)
            self._fp8.calibrate(engine)

        # 3. Compile: whole modules (new wrappers) or each repeated block in place
        unet, enc, dec = self._unet_module, self._vae.encoder, self._vae.decoder
        if compile and compile_scope == "whole":
            unet, enc, dec = (torch.compile(m, dynamic=False, options=options) for m in (unet, enc, dec))
        elif compile:
            for root in (unet, enc, dec):
                self._compile_blocks(root, options)
            if not self.compiled_blocks:
                raise ConfigError(f"--compile-scope blocks found none of {', '.join(BLOCK_CLASSES)} in the model: "
                                  "use --compile-scope whole")
        return unet, TinyVaeCalls(self._vae, enc, dec)

    def _compile_blocks(self, root: torch.nn.Module, options: dict[str, bool]) -> None:
        for parent in list(root.modules()):
            for name, child in list(parent.named_children()):
                if type(child).__name__ in BLOCK_CLASSES:
                    setattr(parent, name, torch.compile(child, dynamic=False, options=options))
                    self._swapped.append((parent, name, child))
        self.compiled_blocks = len(self._swapped)

    @contextlib.contextmanager
    def compiling(self) -> Iterator[None]:
        """Run the first (compiling) calls inside this: with the "blocks" scope it lifts dynamo's
        limit of compiled versions per function for its duration."""
        if self._scope != "blocks":
            yield
            return
        import torch._dynamo.config as dynamo_config

        name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
        with dynamo_config.patch(**{name: max(BLOCK_RECOMPILE_LIMIT, getattr(dynamo_config, name))}):
            yield

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for parent, name, child in reversed(self._swapped):
            setattr(parent, name, child)
        self._swapped.clear()
        if self._fp8 is not None:
            self._fp8.close()
        if self._fused:
            from diffusers.models.attention_processor import Attention

            self._unet_module.unfuse_qkv_projections()
            for m in self._unet_module.modules():
                if isinstance(m, Attention):
                    for fused in ("to_qkv", "to_kv"):  # free the concatenated weights
                        if hasattr(m, fused):
                            delattr(m, fused)
                    m.fused_projections = False

    def __enter__(self) -> StepModules:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CompiledBackend(FramePipeline):
    """CUDA only. Args:
        engine: a prepared StreamEngine on a CUDA device (fp16 recommended), stream batch on,
            tiny VAE, similarity filter off; frame_buffer_size F >= 1 (F frames per process call).
        compile: torch.compile the UNet and VAE; False captures the eager kernels.
        cuda_graph: capture the frame step in a CUDA graph (False: run it step by step).
        warmup: frames run before capture (compilation happens in the first one).
        cache_dir: compile cache folder (default engines/torch_compile).
        fuse_qkv: fused attention projections (default off: no GPU figure shows a gain yet).
        inductor: Inductor preset, one of INDUCTOR_PRESETS (default "default").
        compile_mode: "default" or "max-autotune-no-cudagraphs" (minutes more on first start).
        compile_scope: "whole" (default) or "blocks" (regional compilation, shorter first start).
        overlap_stages: run the frame step as three graphs on three streams (`StagedStep`), so the
            TAESD encode and decode of neighbouring frames overlap the UNet; same results.
        parallel_frames: the two frames in flight run at once, each on its own stream and graph
            (`ParallelStep`); only for frames that carry no state (1 step, cfg none or full); same
            results. Not with overlap_stages.
        fp8_linear: FP8 transformer-block projections (compute capability 8.9+; see backends/compiled/fp8.py).
        cudnn_exhaustive: cuDNN tries every convolution algorithm once per shape (a process-wide
            setting while the backend is open; close() puts the previous limit back).
    """

    name = "compiled"

    def __init__(self, engine: StreamEngine, *, compile: bool = True, cuda_graph: bool = True, warmup: int = 3,
                 cache_dir: str | None = None, fuse_qkv: bool = False, inductor: str = "default",
                 compile_mode: str = "default", compile_scope: str = "whole", overlap_stages: bool = False,
                 parallel_frames: bool = False, fp8_linear: bool = False, cudnn_exhaustive: bool = False) -> None:
        # 1. Check inputs
        if engine.device.type != "cuda":
            raise DeviceError(f"the compiled backend needs a CUDA device; the engine is on {engine.device}: "
                              "use --backend eager on a CPU")
        no_triton = triton_problem() if compile else None
        if no_triton:  # else it would fail only at the first frame, as a long BackendCompilerFailed trace
            raise DeviceError(f"the compiled backend's {no_triton}; or use --backend eager or tensorrt")
        check_capturable(engine, self.name)
        control = engine.control
        if control is not None and (parallel_frames or overlap_stages):
            # the control images are fed between frames into one buffer the graph reads: a second
            # frame running beside the first would overwrite what the first still reads
            raise ConfigError(f"--{'parallel-frames' if parallel_frames else 'overlap-stages'} does not run with "
                              "--controlnet yet: drop one of them")
        if parallel_frames:
            if overlap_stages:
                raise ConfigError("overlap_stages and parallel_frames do not combine: pick one")
            check_parallel(engine)  # before minutes of compiling
        self.engine = engine
        self._closed = False
        t0 = time.perf_counter()

        # 2. Kernels: fp16 weights in channels-last; convolutions autotuned once per shape
        torch.backends.cudnn.benchmark = True
        self._cudnn_limit = torch.backends.cudnn.benchmark_limit  # process-wide: given back on close
        if cudnn_exhaustive:
            torch.backends.cudnn.benchmark_limit = 0
        nets = [u.model for u in control.units] if control is not None else []
        for module in (engine.unet, engine.vae, *nets):
            module.to(memory_format=torch.channels_last)
        if compile:
            self.cache_dir = use_compile_cache(cache_dir)
        self._modules = StepModules(engine, compile=compile, fuse_qkv=fuse_qkv, inductor=inductor,
                                    compile_mode=compile_mode, compile_scope=compile_scope, fp8_linear=fp8_linear)
        self.knobs = {**self._modules.knobs, "overlap_stages": overlap_stages,
                      "parallel_frames": parallel_frames, "cudnn_exhaustive": cudnn_exhaustive}
        self._swap = swap_modules(engine, self._modules.unet, self._modules.vae)
        self._swap.__enter__()
        if control is not None:
            # ControlNet + UNet in the one graph: every ControlNet runs each frame (a scale is a
            # device tensor the graph reads, so 0 costs its time but needs no re-capture)
            control.run_by([torch.compile(u.model, dynamic=False, options=self._modules.compile_options) if compile else None
                            for u in control.units])

        # 3. Warm up (compiles), capture, undo the warm-up frames' effect on the stream state
        try:
            with self._modules.compiling():
                step_class = StagedStep if overlap_stages else ParallelStep if parallel_frames else GraphedStep
                self._run = step_class(engine, warmup=warmup, cuda_graph=cuda_graph)
        except BaseException:
            self._release()
            raise
        self.compile_s = round(self._run.warm_at - t0, 2)
        self.startup_s = round(time.perf_counter() - t0, 2)
        log.info("compiled backend ready in %.1f s (compile+warm-up %.1f s, CUDA graph %s, knobs %s)",
                 self.startup_s, self.compile_s, "on" if cuda_graph else "off", self.knobs)

    def _release(self) -> None:
        if self.engine.control is not None:
            self.engine.control.release_calls()
        self._swap.__exit__(None, None, None)
        self._modules.close()  # unfusing sets the processors fused_qkv saved; then cached attention's again
        self.engine.release_attention_from_graph()
        torch.backends.cudnn.benchmark_limit = self._cudnn_limit
