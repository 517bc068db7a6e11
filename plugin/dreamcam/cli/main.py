"""`dreamcam` command line: argument parsing, printing and exit codes (0 ok, 2 user error)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

import numpy as np

from dreamcam.backends.options import add_knob_arguments
from dreamcam.cli.console import elapsed, say, say_live, status_printer
from dreamcam.errors import ConfigError, DreamcamError
from dreamcam.runtime.pace import PaceWatch, advice, tee
from dreamcam.knobs import PARAMS
from dreamcam.cli.run_options import (
    DEFAULT_TINY_VAE,
    check_model_flags,
    check_output_file,
    cpu_fallback_hint,
    live_control,
    parse_lora,
    resolve_device,
    similarity_filter,
    t_index_list,
)

log = logging.getLogger("dreamcam")

from dreamcam.control.osc.server import DEFAULT_PORT as DEFAULT_OSC_PORT  # noqa: E402


def _add_param_flags(p: argparse.ArgumentParser) -> None:
    """One flag per live parameter, derived from the parameter table."""
    for param in PARAMS.values():
        if param.name == "preset":
            continue
        flag = "--" + param.name.replace("_", "-")
        rng = f" ({param.range_text})" if param.range_text else ""
        if param.kind is bool:
            p.add_argument(flag, action="store_true", default=None, help=param.help)
        else:
            p.add_argument(flag, type=param.kind, default=None, help=f"{param.help}{rng}; default {param.default!r}")


HEAVY_COMMANDS = ("bench", "build-engines")  # their flags live in modules that import torch


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The whole CLI. `command` names the subcommand being run: the flags of the others whose
    modules import torch (bench, build-engines) are then left out, so `dreamcam devices` and
    `dreamcam --help` start in a fraction of a second ("*": all of them, for tools and tests)."""
    parser = argparse.ArgumentParser(prog="dreamcam", description="A live AI-restyled camera.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="capture, restyle and output live")
    run.add_argument("--source", default="webcam", help="webcam[:N] | screen[:MONITOR | :X,Y,W,H] | file:PATH | image:PATH | testpattern")
    run.add_argument("--sink", action="append", help="virtualcam[:BACKEND] | udp://HOST:PORT | file:PATH | preview | null (repeatable)")
    run.add_argument("--model", default="stabilityai/sd-turbo", help="hub id, local diffusers folder, single .safetensors/.ckpt file, or 'tiny' (offline random weights)")
    run.add_argument("--model-config", help="folder (or hub id) with the configs of a single-file checkpoint, for offline use")
    run.add_argument("--vae", help="a VAE to use instead of the model's: hub id or folder, e.g. madebyollin/taesd (tiny, fast)")
    run.add_argument("--lcm-lora", help="LCM-LoRA fused into the model, e.g. latent-consistency/lcm-lora-sdv1-5")
    run.add_argument("--lora", action="append", help="a LoRA fused at a scale: PATH_OR_ID[:SCALE] (repeatable)")
    run.add_argument("--steps", type=int, default=None, help="denoising steps per frame (default 1; with --t-index-list, its length)")
    run.add_argument("--t-index-list", help="explicit schedule indices, e.g. 32,45 (overrides --strength)")
    run.add_argument("--num-inference-steps", type=int, default=50, help="length of the LCM schedule the indices point into")
    run.add_argument("--cfg", default="none", choices=("none", "self", "initialize", "full"), help="residual CFG type (default none)")
    run.add_argument("--similarity-filter", type=float, metavar="THRESHOLD",
                     help="skip the engine for frames this similar to the last (cosine, e.g. 0.98; off by default)")
    run.add_argument("--max-skip-frames", type=int, default=10, help="with --similarity-filter: most frames skipped in a row")
    run.add_argument("--width", type=int, default=512)
    run.add_argument("--height", type=int, default=512)
    run.add_argument("--fit", default="crop", choices=("crop", "letterbox", "stretch"), help="framing of the input to the engine size")
    run.add_argument("--fps", type=float, default=None, help="capture rate to ask the source for")
    run.add_argument("--mirror", action="store_true", help="flip the input left-right (selfie view)")
    run.add_argument("--camera-size", default="1280x720", help="webcam capture size WxH to ask the driver for")
    run.add_argument("--mjpg", action="store_true", help="ask the webcam for MJPG (USB cameras reach 720p/1080p at 30 fps)")
    run.add_argument("--output-size", help="virtual camera / stream size WxH (default 1280x720 for virtualcam, else the engine size)")
    run.add_argument("--output-fps", type=float, help="output frame rate (default: --fps, else 30)")
    run.add_argument("--output-fit", default="letterbox", choices=("letterbox", "crop", "stretch"), help="framing of the engine image to the output size")
    run.add_argument("--bitrate", help="udp/file video bitrate, e.g. 4M or 2500k")
    run.add_argument("--osc-port", type=int, default=DEFAULT_OSC_PORT, help=f"OSC control port (default {DEFAULT_OSC_PORT})")
    run.add_argument("--osc-host", default="127.0.0.1", help="OSC listen address (default 127.0.0.1; 0.0.0.0 for other machines)")
    run.add_argument("--osc-allow", help="only accept OSC from these sender IPs, comma-separated")
    run.add_argument("--osc-feedback", help="HOST:PORT to push changed values to, so controllers stay in sync")
    run.add_argument("--osc-map", help="TOML file binding a controller's own addresses (e.g. /1/fader1) to parameters")
    run.add_argument("--no-osc", action="store_true", help="do not listen for OSC")
    run.add_argument("--presets", help="TOML presets file (re-read when it changes)")
    run.add_argument("--preset", help="start with this preset from --presets (flags given as well win)")
    run.add_argument("--backend", default="auto", help="auto | eager | compiled | tensorrt")
    add_knob_arguments(run)
    run.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    run.add_argument("--frames", type=int, default=0, help="stop after N frames (default: run until Ctrl-C)")
    run.add_argument("--stats-json", type=os.path.expanduser,  # cmd.exe, PowerShell and --x=~/.. leave ~ as is
                     help="write frames, fps and p50/p99 frame ms here at exit")
    _add_param_flags(run)

    from dreamcam.cli import devices

    bench_p = sub.add_parser("bench", help="engine throughput and latency, optionally beside StreamDiffusion")
    devices.add_arguments(sub.add_parser("devices", help="list cameras, monitors and usable virtual cameras"))
    trt_p = sub.add_parser("build-engines", help="build TensorRT engines ahead of time, with progress")
    if command in ("*", "bench"):
        from dreamcam.bench import engine as bench

        bench.add_arguments(bench_p)
    if command in ("*", "build-engines"):
        from dreamcam.backends.tensorrt import backend as tensorrt

        tensorrt.add_arguments(trt_p)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand in `argv` (the first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def _command(name: str):
    if name == "run":
        return cmd_run
    if name == "bench":
        from dreamcam.bench import engine as bench

        return bench.run
    if name == "devices":
        from dreamcam.cli import devices

        return devices.run
    from dreamcam.backends.tensorrt import backend as tensorrt

    return tensorrt.run


def _load_model(args, device, dtype, backend: str = "eager"):
    """The pipeline the flags name; a GPU backend without --vae gets the tiny VAE it needs, or,
    where that cannot be loaded, the model's own (auto then runs eager, and says so)."""
    from dreamcam.models.loading import load_pipeline
    from dreamcam.models.pipelines import tiny_pipeline

    t0 = time.perf_counter()
    say(f"loading model {args.model} on {device} ...")
    if args.model == "tiny":
        pipe = tiny_pipeline(seed=0, device=device, dtype=dtype)
    else:
        vae, optional = args.vae, False
        if vae is None and backend in ("compiled", "tensorrt"):
            vae, optional = DEFAULT_TINY_VAE, True
            say(f"VAE: {vae} (the {backend} backend runs a tiny VAE; --vae to choose another)")
        loras = [parse_lora(s) for s in (args.lora or [])]
        pipe = load_pipeline(
            args.model, config=args.model_config, vae=vae, lcm_lora=args.lcm_lora, loras=loras,
            device=device, dtype=dtype, progress=sys.stderr.isatty(), vae_optional=optional,
        )
    say(f"model ready in {time.perf_counter() - t0:.1f} s")
    return pipe


def cmd_run(args) -> int:
    from dreamcam.backends import check_backend_device, choose_backend, make_backend
    from dreamcam.backends.options import check_knobs, knob_options
    from dreamcam.control.controller import Controller
    from dreamcam.engine.stream import StreamEngine
    from dreamcam.control.osc.server import OscServer
    from dreamcam.runtime.runner import Runner
    from dreamcam.engine.schedule import check_size
    from dreamcam.sinks.devices import open_sink, parse_bitrate
    from dreamcam.sinks.devices import parse_size as parse_output_size
    from dreamcam.sources.specs import open_source, parse_size

    # 1. Check inputs before anything slow
    store, presets, mapping = live_control(args)
    if args.frames < 0:
        raise ConfigError(f"--frames must be >= 0, got {args.frames}")
    if args.stats_json:  # said now, not when the run ends
        check_output_file(args.stats_json, "--stats-json")
    check_size("width", args.width)
    check_size("height", args.height)
    t_index = t_index_list(args, store.get("strength"))
    similarity = similarity_filter(args)
    check_model_flags(args)
    cam_w, cam_h = parse_size(args.camera_size)
    source = open_source(
        args.source, width=cam_w, height=cam_h, fps=args.fps, mirror=args.mirror, fourcc="MJPG" if args.mjpg else None
    )
    source.check()  # a missing file, device node or display is said before the slow model load
    runner = None
    sink_specs = args.sink or ["virtualcam"]
    sinks = [
        open_sink(
            spec, width=args.width, height=args.height, fps=args.fps or 30.0,
            output_size=parse_output_size(args.output_size) if args.output_size else None,
            output_fps=args.output_fps, bitrate=parse_bitrate(args.bitrate) if args.bitrate else None,
            fit_mode=args.output_fit,
            on_quit=lambda: runner is not None and runner.stop(),
            on_bypass=lambda: store.set("bypass", not store.get("bypass")),
        )
        for spec in sink_specs
    ]
    device, dtype = resolve_device(args.device)
    if args.device == "auto" and device.type == "cpu" and args.model != "tiny":
        import torch

        mps = getattr(torch.backends, "mps", None)
        say(cpu_fallback_hint(cuda_build=torch.version.cuda, mps=bool(mps and mps.is_available())))
    chosen = choose_backend(args.backend, device.type)
    check_backend_device(chosen, device.type)  # said before the slow model load
    check_knobs(args, chosen)
    backend_options = knob_options(args) if chosen == "compiled" else {}

    _interrupt_on_sigterm()  # from here outputs are open: SIGTERM must close them, as Ctrl-C does
    with contextlib.ExitStack() as stack:
        # 2. Outputs and OSC open before the slow model load, so a missing virtual camera is said at once
        for sink in sinks:
            stack.enter_context(sink)

        # OSC listens from here on (a busy port is said before the slow load); what arrives while
        # the model loads waits in the store and applies at the first frame
        if not args.no_osc:
            osc = stack.enter_context(
                OscServer(
                    store, host=args.osc_host, port=args.osc_port, allow=args.osc_allow,
                    status=lambda: runner.status() if runner is not None else {"loading": True},
                    presets=presets, feedback=args.osc_feedback, mapping=mapping,
                )
            )
            say(f"OSC on {args.osc_host}:{osc.port} (/dreamcam/prompt, /dreamcam/strength, ... ; /dreamcam/status)")

        # 3. Model, engine and backend
        pipe = _load_model(args, device, dtype, chosen)
        engine = StreamEngine(pipe, t_index, args.width, args.height, cfg_type=args.cfg, device=device, dtype=dtype)
        s = store.snapshot()
        engine.prepare(s["prompt"], s["negative_prompt"], args.num_inference_steps, s["guidance"], s["delta"], seed=s["seed"])
        t0 = time.perf_counter()
        with elapsed(f"backend {chosen}: {BACKEND_START[chosen]}"):
            backend = stack.enter_context(make_backend(args.backend, engine, **backend_options))
            backend.process(np.zeros((args.height, args.width, 3), dtype=np.uint8))  # compiles / captures here, not live
        say(f"backend: {backend.name}, engine {args.width}x{args.height}, steps {engine.t_index_list}; "
             f"warm in {time.perf_counter() - t0:.1f} s")

        # 4. The input last (nothing captured waits on an unopened output); all closed in reverse
        controller = stack.enter_context(Controller(engine, store))
        stack.enter_context(source)
        runner = Runner(
            source, backend, sinks, width=args.width, height=args.height, controller=controller,
            frames=args.frames, fit_mode=args.fit, similarity=similarity,
            on_status=tee(status_printer(), PaceWatch(say_live, lambda: advice(backend, engine))),
        )
        _install_signal_handlers(runner)
        say(f"live: {args.source} -> {', '.join(args.sink or ['virtualcam'])} (Ctrl-C to stop)")
        summary = runner.run()
    summary.update(runner.output_counts())  # the outputs are closed: a recorder's buffer is written out
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    summary["t_index_list"] = engine.t_index_list
    say(
        f"done: {summary['frames']} frames, {summary['fps']:.1f} fps, "
        f"frame p50 {summary['p50_ms']:.1f} ms / p99 {summary['p99_ms']:.1f} ms, dropped {summary['dropped_input']}"
    )
    if args.stats_json:
        try:
            with open(args.stats_json, "w") as f:
                json.dump(summary, f, indent=2)
        except OSError as e:
            raise DreamcamError(f"cannot write --stats-json {args.stats_json}: {e.strerror or e}; choose a writable path") from e
    for i, sink in enumerate(sinks):
        if sink.error is not None:
            raise DreamcamError(f"output {sink_specs[i]} failed: {sink.error}")
        if sink.outages:
            say(f"output {sink_specs[i]} was down {sink.outages} time(s) and came back each time")
    return 0


def _interrupt_on_sigterm() -> None:
    """Until the live loop runs, SIGTERM interrupts like Ctrl-C (KeyboardInterrupt): the outputs
    opened so far are closed and a recording is finished, not left without its index."""

    def handler(signum, _frame):
        raise KeyboardInterrupt

    _set_handlers(dict.fromkeys((signal.SIGTERM, *_WINDOWS_BREAK), handler))


def _set_handlers(handlers: dict) -> None:
    """signal.signal for each (signal, handler); a no-op off the main thread (embedded use)."""
    for sig, handler in handlers.items():
        with contextlib.suppress(ValueError):
            signal.signal(sig, handler)


# Ctrl-Break in a Windows console: unhandled, it ends the process at once (a recording is left
# without its index); Python lets a handler take it (signal docs: SIGBREAK, Windows only)
_WINDOWS_BREAK = (signal.SIGBREAK,) if hasattr(signal, "SIGBREAK") else ()


def _install_signal_handlers(runner) -> None:
    def handler(signum, _frame):
        runner.stop()

    _set_handlers(dict.fromkeys((signal.SIGINT, signal.SIGTERM, *_WINDOWS_BREAK), handler))


# what a backend's start does, said before it (the compiled backend's first start is silent work of a minute)
BACKEND_START = {
    "eager": "warming up",
    "compiled": "compiling and capturing a CUDA graph (first start about a minute; later starts use the cache in engines/)",
    "tensorrt": "loading TensorRT engines (a missing engine is built first, with progress)",
}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no image-processor chatter: dreamcam uses none
    # diffusers' loader warnings ("Expected types for vae", "Attempting to download the necessary
    # config files") would precede dreamcam's own one-line errors; what they mean is in those lines
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="dreamcam: %(levelname)s: %(message)s")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, *_WINDOWS_BREAK)}
    try:
        return _command(args.command)(args)
    except DreamcamError as e:
        print(f"dreamcam: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    finally:  # a run's handlers (see cmd_run) end with it: embedded callers get theirs back
        _set_handlers({sig: h for sig, h in handlers.items() if h is not None})


def console_main() -> None:
    """Entry point of the `dreamcam` command: every device is closed by the time `main` returns,
    so skip the interpreter's teardown of torch and diffusers (seconds after Ctrl-C otherwise)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    console_main()
