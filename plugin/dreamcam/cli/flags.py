"""Flags that several commands share, spelt and explained once: the help layout that shows
defaults, --cfg (alias --cfg-type), --engines-dir, --device, --width/--height. Nothing here
imports torch, so every command's help and checks stay fast."""

from __future__ import annotations

import argparse
import os

from dreamcam.backends import engines_dir
from dreamcam.engine.schedule import CFG_TYPES, check_size
from dreamcam.errors import ConfigError

DEVICES = ("auto", "cuda", "cpu")
ENGINES_ENV = "DREAMCAM_ENGINES_DIR"


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each option's default appended, where there is one worth showing
    (not for switches that are off, nor for options whose default is "not given")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default is None or default is False or default == argparse.SUPPRESS
                or not action.option_strings or action.nargs == 0):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def add_cfg_argument(p: argparse.ArgumentParser) -> None:
    """--cfg (also spelt --cfg-type, its older name in bench and build-engines), into args.cfg_type."""
    p.add_argument("--cfg", "--cfg-type", dest="cfg_type", default="none", choices=CFG_TYPES, metavar="TYPE",
                   help="residual classifier-free guidance: none, self, initialize or full "
                        "(a negative prompt steers only with full or initialize)")


def add_size_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, default=512, help="engine image width in pixels, a multiple of 8")
    p.add_argument("--height", type=int, default=512, help="engine image height in pixels, a multiple of 8")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="where the model runs: auto takes a CUDA GPU when torch sees one, else the CPU")


def engines_dir_text() -> str:
    """The engine cache folder as --help shows it: resolved where it can be made."""
    try:
        return str(engines_dir())
    except OSError as e:  # a read-only home must not stop --help
        return f"none usable ({e.strerror or e}); set ${ENGINES_ENV} or --engines-dir"


def add_engines_dir_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines-dir", type=os.path.expanduser, metavar="DIR",
                   help=f"cache of compiled kernels (DIR/torch_compile) and TensorRT engines (DIR/tensorrt); "
                        f"default ${ENGINES_ENV} if set, else: {engines_dir_text()}")


def use_engines_dir(args: argparse.Namespace) -> None:
    """--engines-dir DIR becomes the process's $DREAMCAM_ENGINES_DIR, so every backend and
    build-engines find the same folder through `dreamcam.backends.engines_dir()`."""
    if args.engines_dir is None:
        return
    if os.path.exists(args.engines_dir) and not os.path.isdir(args.engines_dir):
        raise ConfigError(f"--engines-dir {args.engines_dir} is a file; give a folder (it is made if missing)")
    os.environ[ENGINES_ENV] = os.path.abspath(args.engines_dir)


def check_sizes(args: argparse.Namespace) -> None:
    check_size("--width", args.width)
    check_size("--height", args.height)
