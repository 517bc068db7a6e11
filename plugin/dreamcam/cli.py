"""`dreamcam` command line: argument parsing, printing and exit codes (0 ok, 2 user error)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence

from dreamcam.errors import ConfigError, DreamcamError
from dreamcam.params import PARAMS

log = logging.getLogger("dreamcam")

DEFAULT_OSC_PORT = 9000


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamcam", description="A live AI-restyled camera.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="capture, restyle and output live")
    run.add_argument("--source", default="webcam", help="webcam[:N] | screen[:MONITOR | :X,Y,W,H] | file:PATH | image:PATH | testpattern")
    run.add_argument("--sink", action="append", help="virtualcam[:BACKEND] | udp://HOST:PORT | file:PATH | preview | null (repeatable)")
    run.add_argument("--model", default="stabilityai/sd-turbo", help="hub id, local diffusers folder, single .safetensors/.ckpt file, or 'tiny' (offline random weights)")
    run.add_argument("--steps", type=int, default=1, help="denoising steps per frame (default 1)")
    run.add_argument("--t-index-list", help="explicit schedule indices, e.g. 32,45 (overrides --strength)")
    run.add_argument("--num-inference-steps", type=int, default=50, help="length of the LCM schedule the indices point into")
    run.add_argument("--cfg", default="none", choices=("none", "self", "initialize", "full"), help="residual CFG type (default none)")
    run.add_argument("--width", type=int, default=512)
    run.add_argument("--height", type=int, default=512)
    run.add_argument("--fit", default="crop", choices=("crop", "letterbox", "stretch"), help="framing of the input to the engine size")
    run.add_argument("--fps", type=float, default=None, help="capture rate to ask the source for")
    run.add_argument("--backend", default="auto", help="auto | eager | compiled | tensorrt")
    run.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    run.add_argument("--frames", type=int, default=0, help="stop after N frames (default: run until Ctrl-C)")
    run.add_argument("--stats-json", help="write frames, fps and p50/p99 frame ms here at exit")
    _add_param_flags(run)
    return parser


def resolve_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu (slow) or install a CUDA build of torch")
    dtype = torch.float16 if name == "cuda" else torch.float32
    return torch.device(name), dtype


def _t_index_list(args, strength: float) -> list[int]:
    from dreamcam.engine import check_t_index_list, strength_to_t_index_list

    if args.t_index_list:
        try:
            idx = [int(v) for v in args.t_index_list.split(",")]
        except ValueError as e:
            raise ConfigError(f"--t-index-list takes whole numbers separated by commas, got {args.t_index_list!r}") from e
        return check_t_index_list(idx, args.num_inference_steps)
    return strength_to_t_index_list(strength, args.steps, args.num_inference_steps)


def _load_model(args, device, dtype):
    from dreamcam.models import load_pipeline, tiny_pipeline

    t0 = time.perf_counter()
    _say(f"loading model {args.model} on {device} ...")
    pipe = tiny_pipeline(seed=0, device=device, dtype=dtype) if args.model == "tiny" else load_pipeline(args.model, device=device, dtype=dtype)
    _say(f"model ready in {time.perf_counter() - t0:.1f} s")
    return pipe


def cmd_run(args) -> int:
    from dreamcam.backends import make_backend
    from dreamcam.controls import Controller
    from dreamcam.engine import StreamEngine
    from dreamcam.params import ParamStore
    from dreamcam.runner import Runner
    from dreamcam.sinks import open_sink
    from dreamcam.sources import open_source

    # 1. Check inputs before anything slow
    initial = {p: getattr(args, p) for p in PARAMS if getattr(args, p, None) is not None}
    store = ParamStore(initial)
    if args.frames < 0:
        raise ConfigError(f"--frames must be >= 0, got {args.frames}")
    from dreamcam.engine import _check_size

    _check_size("width", args.width)
    _check_size("height", args.height)
    t_index = _t_index_list(args, store.get("strength"))
    source = open_source(args.source, fps=args.fps)
    sinks = [open_sink(s, width=args.width, height=args.height, fps=args.fps or 30.0) for s in (args.sink or ["virtualcam"])]
    device, dtype = resolve_device(args.device)

    # 2. Model, engine and backend
    pipe = _load_model(args, device, dtype)
    engine = StreamEngine(pipe, t_index, args.width, args.height, cfg_type=args.cfg, device=device, dtype=dtype)
    s = store.snapshot()
    engine.prepare(s["prompt"], s["negative_prompt"], args.num_inference_steps, s["guidance"], s["delta"], seed=s["seed"])
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(make_backend(args.backend, engine))
        _say(f"backend: {backend.name}, engine {args.width}x{args.height}, steps {engine.t_index_list}")

        # 3. Outputs first, then the input (so no frame waits on a closed output); closed in reverse
        for sink in sinks:
            stack.enter_context(sink)
        controller = stack.enter_context(contextlib.closing(Controller(engine, store)))
        stack.enter_context(source)
        runner = Runner(
            source, backend, sinks, width=args.width, height=args.height, controller=controller,
            frames=args.frames, fit_mode=args.fit, on_status=_status_printer(),
        )
        _install_signal_handlers(runner)
        summary = runner.run()
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    summary["t_index_list"] = engine.t_index_list
    if args.stats_json:
        with open(args.stats_json, "w") as f:
            json.dump(summary, f, indent=2)
    _say(
        f"done: {summary['frames']} frames, {summary['fps']:.1f} fps, "
        f"frame p50 {summary['p50_ms']:.1f} ms / p99 {summary['p99_ms']:.1f} ms, dropped {summary['dropped_input']}"
    )
    for i, sink in enumerate(sinks):
        if sink.error is not None:
            raise DreamcamError(f"output {args.sink[i] if args.sink else sink.kind} failed: {sink.error}")
    return 0


def _install_signal_handlers(runner) -> None:
    def handler(signum, _frame):
        runner.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread (embedded use)
            signal.signal(sig, handler)


def _status_printer():
    if not sys.stderr.isatty():
        return None

    def show(st: dict) -> None:
        sys.stderr.write(
            f"\r{st['fps']:6.1f} fps | engine {st['engine_ms']:6.1f} ms | latency {st['latency_ms']:6.1f} ms "
            f"| in {st['input_fps']:5.1f} fps | dropped {st['dropped']}{' | BYPASS' if st['bypass'] else ''}   "
        )
        sys.stderr.flush()

    return show


def _say(msg: str) -> None:
    print(f"dreamcam: {msg}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="dreamcam: %(levelname)s: %(message)s")
    commands = {"run": cmd_run}
    try:
        return commands[args.command](args)
    except DreamcamError as e:
        print(f"dreamcam: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
