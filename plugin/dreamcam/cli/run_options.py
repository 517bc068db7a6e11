"""Checks of `dreamcam run`'s options, done before anything slow opens (outputs, the model):
each turns flags into checked values or raises ConfigError, one line saying how to fix it."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from dreamcam.cli.console import say
from dreamcam.control.maps import ControllerMap
from dreamcam.control.midi.ports import open_ports
from dreamcam.control.lfo import parse_lfos
from dreamcam.control.presets import PresetLibrary
from dreamcam.engine.schedule import check_t_index_list, strength_to_t_index_list
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS, ParamStore


@dataclass
class RunPlan:
    """What the checked flags give the live part: values, and the source and outputs built (not opened)."""

    store: ParamStore
    presets: PresetLibrary | None
    mapping: ControllerMap | None
    t_index: list[int]
    similarity: tuple[float, int] | None
    source: Any
    sinks: list
    sink_specs: list[str]
    runner: Any = field(default=None)  # the live loop, once it exists: an output's quit key stops it
    midi: tuple[Any, Any] | None = None  # --midi: the input port and the device's output port (or None)
    controller: Any = field(default=None)  # the live controller, once it exists (its quantised change in status)

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()


def no_gpu_diagnosis(*, cuda_build: str | None, mps: bool) -> str:
    """Why torch finds no CUDA GPU here and what to do about it: the one diagnosis that
    `dreamcam devices`, `--device auto` falling back to the CPU and `--device cuda` all give.

    cuda_build is torch.version.cuda (None for a CPU-only build of torch); mps says whether an
    Apple-silicon GPU is present (dreamcam does not use it yet).
    """
    if mps:
        return "Apple-silicon GPUs (MPS) are not used yet"
    if sys.platform == "darwin":  # no CUDA build of torch exists for macOS: the CUDA advice cannot be followed
        return "macOS has no CUDA"
    if cuda_build is None:
        return (
            "this torch is a CPU-only build; for an NVIDIA GPU install a CUDA build, e.g. "
            "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu128"
        )
    return f"torch has CUDA {cuda_build} but finds no GPU; check the NVIDIA driver with nvidia-smi"


def cpu_fallback_hint(*, cuda_build: str | None, mps: bool) -> str:
    """What to tell a user whose real model is about to run on the CPU because `auto` found no GPU."""
    slow = "no CUDA GPU is visible to torch, so the model runs on the CPU (seconds a frame, not frames a second)"
    why = no_gpu_diagnosis(cuda_build=cuda_build, mps=mps)
    if mps:
        return f"{slow}; {why}"
    if sys.platform == "darwin":
        return f"{slow}; {why}, so this is as fast as dreamcam runs on this Mac"
    return f"{slow}: {why}"


def t_index_list(args, strength: float) -> list[int]:
    """The engine's schedule indices from --t-index-list, else from strength and --steps."""
    if args.t_index_list is not None:
        try:
            idx = [int(v) for v in args.t_index_list.split(",")]
        except ValueError as e:
            raise ConfigError(f"--t-index-list takes whole numbers separated by commas, got {args.t_index_list!r}") from e
        if args.steps is not None and args.steps != len(idx):
            raise ConfigError(
                f"--steps {args.steps} and --t-index-list {args.t_index_list} ({len(idx)} indices) disagree: "
                f"the list gives one index per step; drop --steps or give {args.steps} indices"
            )
        return check_t_index_list(idx, args.num_inference_steps)
    return strength_to_t_index_list(strength, 1 if args.steps is None else args.steps, args.num_inference_steps)


def live_control(args):
    """The parameter store from presets and flags (flags win), and the OSC mapping."""
    store = ParamStore()
    presets = PresetLibrary(args.presets) if args.presets else None
    if args.preset:
        if presets is None:
            raise ConfigError("--preset NAME needs --presets FILE")
        presets.apply(args.preset, store)
    if getattr(args, "cue", None):
        if presets is None:
            raise ConfigError("--cue NAME needs --presets FILE with a cue list")
        cue = presets.step_cue("", args.cue)
        store.update({**presets.get(cue), "preset": cue, "cue": cue})
    store.update({p: getattr(args, p) for p in PARAMS if p != "cue" and getattr(args, p, None) is not None})
    if args.lfo is not None:
        try:
            parse_lfos(args.lfo)
        except ConfigError as e:
            raise ConfigError(f"--lfo: {e}") from None
    mapping = controller_map(args)
    if mapping is not None and mapping.lfo is not None and args.lfo is None:  # --lfo wins over the map's
        store.set("lfo", mapping.lfo)
    store.take_changes()  # the engine is prepared with these values
    if store.get("negative_prompt") and args.cfg_type not in ("full", "initialize"):
        say(f"note: the negative prompt steers only with --cfg full or initialize; with --cfg {args.cfg_type} it is unused")
    if mapping is not None and presets is None:  # a preset binding with no file: said before any output opens
        mapping.check_presets(None)
    return store, presets, mapping


def controller_map(args) -> ControllerMap | None:
    """The --map file's bindings; with --learn a missing file is an empty map (learn makes it)."""
    learn = getattr(args, "learn", False)
    if learn and not args.midi:
        raise ConfigError("--learn binds MIDI controls: add --midi auto (or the port `dreamcam devices` lists)")
    if learn and not args.map:
        raise ConfigError("--learn writes what it learns to a map file: add --map FILE (made when missing)")
    if not args.map:
        return None
    path = os.path.expanduser(args.map)
    if learn and not os.path.exists(path):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ConfigError(f"--map {args.map}: folder {folder} does not exist")
        return ControllerMap([], path)
    return ControllerMap.load(path)


def open_midi(args) -> tuple[Any, Any] | None:
    """--midi PORT: the opened input port and the same device's output port (None without one)."""
    return open_ports(args.midi) if getattr(args, "midi", None) else None


def similarity_filter(args) -> tuple[float, int] | None:
    """(threshold, most frames skipped in a row) of --similarity-filter, or None when it is off."""
    if args.similarity_filter is None:
        return None
    if not 0.0 < args.similarity_filter <= 1.0:
        raise ConfigError(f"--similarity-filter takes a cosine similarity in (0, 1], e.g. 0.98; got {args.similarity_filter}")
    if args.max_skip_frames < 0:
        raise ConfigError(f"--max-skip-frames must be >= 0, got {args.max_skip_frames}")
    return args.similarity_filter, args.max_skip_frames


def check_output_file(path: str, flag: str) -> None:
    """Say at start, not when a long run ends, that `flag PATH` cannot be written: a missing
    folder, a folder given as the file, a read-only folder or disk (ConfigError). Opens the
    file for appending to find out; a file that was not there before is removed again."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"{flag} {path}: folder {folder} does not exist")
    existed = os.path.lexists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write {flag} {path}: {e.strerror or e}; choose a writable path") from e
    if not existed:
        with contextlib.suppress(OSError):
            os.remove(path)
