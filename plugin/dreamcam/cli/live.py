"""The live part of `dreamcam run`, once its flags are checked (`dreamcam.cli.run`): outputs and
OSC open, then the model, engine and backend load, then the input starts and the loop runs
until Ctrl-C, SIGTERM, a quit key or --frames. Everything opened is closed in reverse order."""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import threading
import time

import numpy as np
import torch

from dreamcam.backends import check_backend_device, choose_backend, make_backend
from dreamcam.backends.options import check_knobs, knob_options
from dreamcam.cli.console import elapsed, say, say_live, status_printer
from dreamcam.cli.model_load import load_controlnets, load_model
from dreamcam.cli.models import BUILTIN_MODELS
from dreamcam.cli.run_options import RunPlan, cpu_fallback_hint, no_gpu_diagnosis
from dreamcam.cli.signals import install_signal_handlers, interrupt_on_sigterm
from dreamcam.control.clock import BeatClock, LinkSession
from dreamcam.control.controller import Controller
from dreamcam.control.map_file import MapReloader
from dreamcam.control.midi.controller import MidiController
from dreamcam.control.osc.dispatch import OscDispatcher
from dreamcam.control.osc.compat import Compat
from dreamcam.control.osc.server import OscServer
from dreamcam.engine.similarity import SimilarityFilter
from dreamcam.engine.stream import StreamEngine
from dreamcam.errors import ConfigError, DreamcamError
from dreamcam.runtime.flicker import FlickerMeter, flicker_text
from dreamcam.runtime.pace import PaceWatch, advice, tee
from dreamcam.runtime.runner import Runner
from dreamcam.sinks.file import FileSink

# what a backend's start does, said before it (the compiled backend's first start is silent work of a minute)
BACKEND_START = {
    "eager": "warming up",
    "compiled": "compiling and capturing a CUDA graph (first start about a minute; later starts use the engine cache)",
    "tensorrt": "loading TensorRT engines (a missing engine is built first, with progress)",
}


def resolve_device(name: str) -> tuple[torch.device, torch.dtype]:
    """--device auto|cuda|cpu -> the torch device and the dtype the model runs in there."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        mps = getattr(torch.backends, "mps", None)
        why = no_gpu_diagnosis(cuda_build=torch.version.cuda, mps=bool(mps and mps.is_available()))
        raise ConfigError(f"--device cuda: no CUDA GPU is visible to torch: {why}; or use --device cpu (slow)")
    dtype = torch.float16 if name == "cuda" else torch.float32
    return torch.device(name), dtype


def learn_console(midi: MidiController) -> None:
    """--learn: each line typed on the console names what the last (or next) control moved drives."""
    say("learn: move a control on the MIDI device, then type what it drives and Enter: a knob "
        "(strength, guidance, bypass, ...), 'preset NAME' or an address ('/dreamcam/cue next'); 'off' stops")

    def read() -> None:
        for line in sys.stdin:
            try:
                midi.arm(line)
            except ConfigError as e:
                say_live(str(e))

    threading.Thread(target=read, name="dreamcam-learn-console", daemon=True).start()


def beat_status(beats: BeatClock, plan: RunPlan) -> dict:
    """The beat clock's fields of /dreamcam/status (tempo, beat, clock, link_peers) and whether a
    quantised change waits for its beat."""
    ctl = plan.controller
    return beats.status() | {"quantize_pending": bool(ctl is not None and ctl.sync.pending)}


def run(args: argparse.Namespace, plan: RunPlan) -> int:
    """Run live until stopped; 0, or DreamcamError when an output failed for good."""
    device, dtype = resolve_device(args.device)
    if args.device == "auto" and device.type == "cpu" and args.model not in BUILTIN_MODELS:
        mps = getattr(torch.backends, "mps", None)
        say(cpu_fallback_hint(cuda_build=torch.version.cuda, mps=bool(mps and mps.is_available())))
    chosen = choose_backend(args.backend, device.type)
    check_backend_device(chosen, device.type)  # said before the slow model load
    check_knobs(args, chosen)
    backend_options = knob_options(args) if chosen == "compiled" else {}
    store, sinks = plan.store, plan.sinks

    interrupt_on_sigterm()  # from here outputs are open: SIGTERM must close them, as Ctrl-C does
    phase = "while the outputs opened"

    def say_where_stopped(exc_type, _exc, _tb) -> None:
        # called last, once every output is closed (an empty recording is gone by then)
        if exc_type is KeyboardInterrupt and plan.runner is None:
            recorded = "; nothing was recorded" if any(isinstance(sink, FileSink) for sink in sinks) else ""
            say(f"stopped {phase}{recorded}")

    with contextlib.ExitStack() as stack:
        stack.push(say_where_stopped)
        if plan.midi is not None:  # opened by the checks: closed with the rest, whatever happens
            for port in plan.midi:
                if port is not None:
                    stack.callback(port.close)
        # 1. Outputs and OSC open before the slow model load, so a missing virtual camera is said at once
        for sink in sinks:
            stack.enter_context(sink)

        # OSC listens from here on (a busy port is said before the slow load); what arrives while
        # the model loads waits in the store and applies at the first frame
        # the beat clock: an Ableton Link session with --link, else tap tempo or the bpm knob
        beats = BeatClock(store.get("bpm"), link=LinkSession(store.get("bpm")) if args.link else None)
        stack.callback(beats.close)
        if args.link:
            say(f"Ableton Link joined: {beats.bpm():.1f} bpm, {beats.link.peers()} peer(s) so far")
        # a new id each run: a controller that sees it change knows dreamcam restarted and
        # sends its values again (the OBS script does)
        instance = {"instance": secrets.token_hex(8)}
        midi = None

        def status() -> dict:
            extra = beat_status(beats, plan) | (midi.status() if midi is not None else {})
            return instance | extra | (plan.runner.status() if plan.runner is not None else {"loading": True})

        dispatcher = None
        if not args.no_osc:
            dispatcher = osc = stack.enter_context(
                OscServer(
                    store, host=args.osc_host, port=args.osc_port, allow=args.osc_allow, status=status,
                    presets=plan.presets, feedback=args.osc_feedback, mapping=plan.mapping,
                    compat=Compat(args.osc_compat) if args.osc_compat != "off" else None, clock=beats,
                )
            )
            say(f"OSC on {args.osc_host}:{osc.port} (/dreamcam/prompt, /dreamcam/strength, ... ; /dreamcam/status)")
            if osc.compat is not None:
                reports = f"; reports to {osc.report_to[0]}:{osc.report_to[1]}" if osc.report_to else ""
                say(f"OSC also takes {args.osc_compat} addresses: {', '.join(osc.compat.aliases)}{reports}")
        if plan.midi is not None:
            # MIDI controls go through the OSC checks: without an OSC server, a dispatcher with no socket
            dispatcher = dispatcher or OscDispatcher(store, status=status, presets=plan.presets, mapping=plan.mapping, clock=beats)
            inport, outport = plan.midi
            midi = stack.enter_context(MidiController(
                dispatcher, plan.mapping, inport, outport, map_path=args.map, learning=args.learn, on_learn=say_live))
            feedback = f", feedback to {outport.name}" if outport is not None else " (the device has no output: no feedback)"
            say(f"MIDI from {inport.name}{feedback}")
            if args.learn:
                learn_console(midi)
        if args.map and dispatcher is not None:  # an edit of the map file applies while running
            stack.enter_context(MapReloader(args.map, dispatcher.replace_map))

        # 2. Model, engine and backend
        phase = "during the model load"
        pipe = load_model(args, device, dtype, chosen)
        s = store.snapshot()
        control = load_controlnets(args, pipe, s)
        engine = StreamEngine(pipe, plan.t_index, args.width, args.height, cfg_type=args.cfg_type, device=device,
                              dtype=dtype, control=control)
        engine.prepare(s["prompt"], s["negative_prompt"], args.num_inference_steps, s["guidance"], s["delta"], seed=s["seed"])
        engine.set_smoothing(s["smoothing"])  # before the backend: --parallel-frames holds these at 0 and says so
        engine.set_feedback(s["feedback"])
        engine.set_motion_guard(s["motion_guard"])
        # cached attention before the backend: a graphed backend captures the bank only if it is on now
        engine.set_attn_refresh(s["attn_refresh"])
        engine.set_attn_fusion(s["attn_fusion"])
        engine.set_attn_bank(s["attn_bank"])
        t0 = time.perf_counter()
        phase = "while the backend warmed up"
        with elapsed(f"backend {chosen}: {BACKEND_START.get(chosen, 'starting')}"):
            backend = stack.enter_context(make_backend(args.backend, engine, **backend_options))
            backend.process(np.zeros((args.height, args.width, 3), dtype=np.uint8))  # compiles / captures here, not live
        say(f"backend: {backend.name}, engine {args.width}x{args.height}, steps {engine.t_index_list}; "
            f"warm in {time.perf_counter() - t0:.1f} s")

        # 3. The input last (nothing captured waits on an unopened output); all closed in reverse
        phase = "while the input opened"
        controller = plan.controller = stack.enter_context(Controller(engine, store, beats=beats))
        meter = None
        if args.flicker_rate > 0:  # its thread measures sampled frame pairs, off the frame path
            meter = stack.enter_context(FlickerMeter(args.width, args.height, fit_mode=args.fit, rate=args.flicker_rate))
        stack.enter_context(plan.source)
        runner = plan.runner = Runner(
            plan.source, backend, sinks, width=args.width, height=args.height, controller=controller,
            frames=args.frames, fit_mode=args.fit,
            similarity=SimilarityFilter(*plan.similarity) if plan.similarity else None,
            on_status=tee(status_printer(lambda: beat_status(beats, plan)),
                          PaceWatch(say_live, lambda: advice(backend, engine))),
            meter=meter,
        )
        if meter is not None:
            for sink in sinks:  # the preview window shows the figure under its fps line
                if hasattr(sink, "overlay"):
                    sink.overlay = lambda: flicker_text(**runner.flicker())
        install_signal_handlers(runner)
        say(f"live: {args.source} -> {', '.join(plan.sink_specs)} (Ctrl-C to stop)")
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
    for spec, sink in zip(plan.sink_specs, sinks):
        if sink.error is not None:
            raise DreamcamError(f"output {spec} failed: {sink.error}")
        if sink.outages:
            say(f"output {spec} was down {sink.outages} time(s) and came back each time")
    return 0
