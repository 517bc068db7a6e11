"""`dreamcam` command line: the top-level parser and dispatch; exit codes 0 ok, 2 user error.

Each command lives in its own module (`dreamcam.cli.run`, `.bench`, `.devices`,
`.build_engines`), with `add_arguments(parser)` and `run(args)`. Only the module of the command
being run is imported, and each checks its flags before it imports torch, so `dreamcam --help`,
`dreamcam run --help` and a mistyped flag answer in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from dreamcam import __version__
from dreamcam.cli.flags import ENGINES_ENV, HelpFormatter
from dreamcam.cli.signals import set_handlers, stop_signals
from dreamcam.errors import DreamcamError
from dreamcam.knobs import PARAMS

# command -> (module with add_arguments(parser) and run(args), one-line help)
COMMANDS = {
    "run": ("dreamcam.cli.run", "capture, restyle and output live"),
    "bench": ("dreamcam.cli.bench", "engine throughput and latency, optionally beside StreamDiffusion"),
    "devices": ("dreamcam.cli.devices", "list cameras, monitors, usable virtual cameras, GPUs and backends"),
    "build-engines": ("dreamcam.cli.build_engines", "build TensorRT engines ahead of time, with progress"),
    "knobs": ("dreamcam.cli.knobs", "list the live knobs (flags, OSC addresses, ranges)"),
}


def _add_param_flags(p: argparse.ArgumentParser) -> None:
    """One flag per live knob, from the knob table (its range and default in the help)."""
    for param in PARAMS.values():
        if param.kind is bool:
            p.add_argument(param.flag, dest=param.name, action="store_true", default=None,
                           help=f"{param.help} (default {'on' if param.default else 'off'})")
            continue
        shown = [param.range_text] if param.range_text else []
        if param.default != "":
            shown.append(f"default {param.default!r}")
        more = f" ({'; '.join(shown)})" if shown else ""
        p.add_argument(param.flag, dest=param.name, type=param.kind, default=None, help=f"{param.help}{more}",
                       choices=param.choices or None)


def _command_module(name: str):
    # lazy: keeps start-up fast (only the command being run is imported)
    return importlib.import_module(COMMANDS[name][0])


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The whole CLI. `command` names the subcommand being run: only its flags are built (its
    module imported), so `dreamcam --help` loads none ("*": all of them, for tools and tests)."""
    parser = argparse.ArgumentParser(prog="dreamcam", description="A live AI-restyled camera.", formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"dreamcam {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)
        if command in ("*", name):
            _command_module(name).add_arguments(p)
            if name == "run":
                _add_param_flags(p)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand in `argv` (the first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no image-processor chatter: dreamcam uses none
    # diffusers' loader warnings ("Expected types for vae", "Attempting to download the necessary
    # config files") would precede dreamcam's own one-line errors; what they mean is in those lines
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="dreamcam: %(levelname)s: %(message)s")
    handlers = {sig: signal.getsignal(sig) for sig in stop_signals()}
    engines_env = os.environ.get(ENGINES_ENV)
    try:
        return _command_module(args.command).run(args)
    except DreamcamError as e:
        print(f"dreamcam: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    finally:  # a run's handlers and --engines-dir end with it: embedded callers get theirs back
        set_handlers({sig: h for sig, h in handlers.items() if h is not None})
        if engines_env is None:
            os.environ.pop(ENGINES_ENV, None)
        else:
            os.environ[ENGINES_ENV] = engines_env


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
