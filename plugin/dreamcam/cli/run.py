"""`dreamcam run`: its flags, and every check of them, done before torch loads.

A mistyped flag, a value out of its range, a bad size, source or sink spec, or an unwritable
file is refused in a fraction of a second; only then does `dreamcam.cli.live` load torch, the
model and the backend and run the live loop.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

from dreamcam.backends import BACKENDS, check_backend_device, choose_backend
from dreamcam.backends.options import add_knob_arguments, check_knobs
from dreamcam.cli.flags import (
    add_cfg_argument,
    add_device_argument,
    add_engines_dir_argument,
    add_size_arguments,
    check_sizes,
    use_engines_dir,
)
from dreamcam.cli.models import add_controlnet_arguments, add_model_arguments, check_control_knobs, check_model_flags
from dreamcam.cli.run_options import (
    RunPlan,
    check_output_file,
    live_control,
    open_midi,
    similarity_filter,
    t_index_list,
)
from dreamcam.control.clock import LINK_PACKAGE
from dreamcam.control.osc.compat import COMPAT_MODES, TD_LISTEN_PORT
from dreamcam.control.osc.server import DEFAULT_PORT as DEFAULT_OSC_PORT
from dreamcam.errors import ConfigError
from dreamcam.frames import FIT_MODES
from dreamcam.runtime.flicker import DEFAULT_RATE as FLICKER_RATE
from dreamcam.sinks.base import parse_bitrate, parse_size
from dreamcam.sinks.specs import check_distinct_recordings, open_sink
from dreamcam.sources.specs import open_source

DEFAULT_SINK = "virtualcam"


def add_arguments(run: argparse.ArgumentParser) -> None:
    """Flags of `dreamcam run` (the live knobs, --prompt, --strength, ..., are added by the caller)."""
    run.add_argument("--source", default="webcam", help="webcam[:N] | screen[:MONITOR | :X,Y,W,H] | file:PATH | image:PATH | testpattern")
    run.add_argument("--sink", action="append",
                     help=f"virtualcam[:BACKEND] | udp://HOST:PORT | file:PATH | preview | null (repeatable; default {DEFAULT_SINK})")
    add_model_arguments(run, default="stabilityai/sd-turbo")
    add_controlnet_arguments(run)
    run.add_argument("--steps", type=int, default=None, help="denoising steps per frame (default 1; with --t-index-list, its length)")
    run.add_argument("--t-index-list", help="explicit schedule indices, e.g. 32,45 (overrides --strength)")
    run.add_argument("--num-inference-steps", type=int, default=50, help="length of the LCM schedule the indices point into")
    add_cfg_argument(run)
    run.add_argument("--similarity-filter", type=float, metavar="THRESHOLD",
                     help="skip the engine for frames this similar to the last (cosine, e.g. 0.98; off by default)")
    run.add_argument("--max-skip-frames", type=int, default=10, help="with --similarity-filter: most frames skipped in a row")
    add_size_arguments(run)
    run.add_argument("--fit", default="crop", choices=FIT_MODES, help="framing of the input to the engine size")
    run.add_argument("--fps", type=float, default=None, help="capture rate to ask the source for")
    run.add_argument("--mirror", action="store_true", help="flip the input left-right (selfie view)")
    run.add_argument("--camera-size", default="1280x720", help="webcam capture size WxH to ask the driver for")
    run.add_argument("--mjpg", action="store_true", help="ask the webcam for MJPG (USB cameras reach 720p/1080p at 30 fps)")
    run.add_argument("--output-size", help="virtual camera / stream size WxH (default 1280x720 for virtualcam, else the engine size)")
    run.add_argument("--output-fps", type=float, help="output frame rate (default: --fps, else 30)")
    run.add_argument("--output-fit", default="letterbox", choices=FIT_MODES, help="framing of the engine image to the output size")
    run.add_argument("--bitrate", help="udp/file video bitrate, e.g. 4M or 2500k")
    run.add_argument("--osc-port", type=int, default=DEFAULT_OSC_PORT, help="OSC control port")
    run.add_argument("--osc-host", default="127.0.0.1", help="OSC listen address (0.0.0.0 for other machines)")
    run.add_argument("--osc-allow", help="only accept OSC from these sender IPs, comma-separated; "
                     "needed for an --osc-host other than loopback ('any' lets every sender steer)")
    run.add_argument("--osc-feedback", help="HOST:PORT to push changed values to, so controllers stay in sync")
    run.add_argument("--map", "--osc-map", dest="map", metavar="FILE",
                     help="controller map (TOML) binding OSC addresses (/1/fader1) and MIDI controls (cc 7, note 36) "
                          "to knobs, presets and actions; MIDI learn writes to it")
    run.add_argument("--midi", metavar="PORT",
                     help="MIDI controller input: auto (the first), an index or (part of) a name from `dreamcam devices`")
    run.add_argument("--learn", action="store_true",
                     help="MIDI learn from the console: move a control, then type the knob it drives (needs --midi and --map)")
    run.add_argument("--osc-compat", default="off", choices=COMPAT_MODES,
                     help="also take another tool's OSC addresses: td (StreamDiffusionTD: /prompt, /prompt_list, ...; "
                          f"its port is {TD_LISTEN_PORT}) or scope (daydream Scope: /scope/prompt, ...)")
    run.add_argument("--link", action="store_true",
                     help="join an Ableton Link session: its tempo and beat drive --quantize and LFOs (needs dreamcam[link])")
    run.add_argument("--no-osc", action="store_true", help="do not listen for OSC")
    run.add_argument("--presets", help="TOML presets file (re-read when it changes)")
    run.add_argument("--backend", default="auto", help=" | ".join(BACKENDS))
    add_knob_arguments(run)
    add_device_argument(run)
    add_engines_dir_argument(run)
    run.add_argument("--flicker-rate", type=float, default=FLICKER_RATE, metavar="HZ",
                     help=f"flicker meter samples per second, measured off the frame path (default {FLICKER_RATE:g}; 0: off)")
    run.add_argument("--frames", type=int, default=0, help="stop after N frames (0: run until Ctrl-C)")
    run.add_argument("--stats-json", type=os.path.expanduser,  # cmd.exe, PowerShell and --x=~/.. leave ~ as is
                     help="write frames, fps and p50/p99 frame ms here at exit")


def check(args: argparse.Namespace) -> RunPlan:
    """Every flag checked, without torch: ConfigError (or DeviceError for a missing file, device
    node or display) with one line saying what to change."""
    # an unknown --backend is said here; which backend auto picks waits for torch unless --device is given
    chosen = choose_backend(args.backend, "cpu" if args.device == "auto" else args.device)
    store, presets, mapping = live_control(args)
    if args.link and importlib.util.find_spec("link") is None:  # said now, not after the model load
        raise ConfigError(f"--link needs {LINK_PACKAGE}: pip install 'dreamcam[link]' (or pip install {LINK_PACKAGE})")
    if args.frames < 0:
        raise ConfigError(f"--frames must be >= 0, got {args.frames}")
    if not args.flicker_rate >= 0:  # nan too
        raise ConfigError(f"--flicker-rate takes samples per second >= 0 (0 turns the meter off), got {args.flicker_rate}")
    if args.stats_json:  # said now, not when the run ends
        check_output_file(args.stats_json, "--stats-json")
    check_sizes(args)
    t_index = t_index_list(args, store.get("strength"))
    similarity = similarity_filter(args)
    check_model_flags(args)
    args.control_specs = check_control_knobs(args, store.snapshot())
    use_engines_dir(args)
    if args.device != "auto":
        check_backend_device(chosen, args.device)
        check_knobs(args, chosen)
    cam_w, cam_h = parse_size(args.camera_size, "--camera-size", video=False)
    source = open_source(
        args.source, width=cam_w, height=cam_h, fps=args.fps, mirror=args.mirror, fourcc="MJPG" if args.mjpg else None
    )
    source.check()  # a missing file, device node or display is said before the slow model load
    sink_specs = args.sink or [DEFAULT_SINK]
    plan = RunPlan(store, presets, mapping, t_index, similarity, source, [], sink_specs)
    output_size = parse_size(args.output_size) if args.output_size else None
    bitrate = parse_bitrate(args.bitrate) if args.bitrate else None
    plan.sinks = [
        open_sink(
            spec, width=args.width, height=args.height, fps=args.fps or 30.0, output_size=output_size,
            output_fps=args.output_fps, bitrate=bitrate, fit_mode=args.output_fit, on_quit=plan.stop,
            on_bypass=lambda: store.set("bypass", not store.get("bypass")),
        )
        for spec in sink_specs
    ]
    check_distinct_recordings(sink_specs, plan.sinks)
    plan.midi = open_midi(args)  # last: a port opened is closed by the live part
    return plan


def run(args: argparse.Namespace) -> int:
    plan = check(args)
    # lazy: torch, diffusers and the model load only once every flag has been checked
    from dreamcam.cli import live

    return live.run(args, plan)
