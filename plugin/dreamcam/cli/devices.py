"""`dreamcam devices`: the cameras that open, the monitors, the usable virtual cameras, the MIDI
ports, and the GPUs and backends that can run the model here.

Each probe is quiet and quick: cameras are opened (not read) with OpenCV's logging silenced,
monitors come from mss, each registered pyvirtualcam backend is opened at 64x48 and closed at
once, its error line kept when it fails, and the backends are checked for what they need (a
CUDA GPU, Triton, a supported TensorRT) without building anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import cv2

from dreamcam.backends import BackendSpec, auto_candidates, registered
from dreamcam.cli.flags import engines_dir_text
from dreamcam.cli.run_options import cpu_fallback_hint
from dreamcam.control.midi.ports import list_ports
from dreamcam.errors import DeviceError, DreamcamError
from dreamcam.sinks.virtualcam import install_hint
from dreamcam.sources.base import quiet_opencv
from dreamcam.sources.screen import new_mss
from dreamcam.sources.webcam import open_camera, present_cameras

log = logging.getLogger(__name__)

PROBE_INDICES = 10  # camera indices tried where there are no device nodes to list (Windows, macOS)


def _fourcc_text(value: float) -> str:
    code = int(value)
    text = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4))
    return text if code and text.isprintable() else ""


def _v4l2_name(path: str) -> str:
    try:
        with open(f"/sys/class/video4linux/{os.path.basename(path)}/name") as f:
            return f.read().strip()
    except OSError:
        return ""


def find_cameras(max_index: int = PROBE_INDICES) -> list[dict]:
    """Cameras that open: device nodes /dev/video* on Linux, indices 0..max_index-1 elsewhere.

    Each entry: source (the `--source` value), device, name, width, height, fps, fourcc.
    Nodes that exist but do not open (metadata nodes, busy cameras) are left out.
    """
    linux = sys.platform.startswith("linux")
    candidates: list[int | str] = present_cameras() if linux else list(range(max_index))
    found = []
    for device in candidates:
        with quiet_opencv():
            cap = open_camera(device)
            try:
                if not cap.isOpened():
                    continue
                found.append(
                    {
                        "source": f"webcam:{device}",
                        "device": device,
                        "name": _v4l2_name(device) if isinstance(device, str) else "",
                        "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                        "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                        "fps": round(float(cap.get(cv2.CAP_PROP_FPS) or 0.0), 2),
                        "fourcc": _fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)),
                    }
                )
            finally:
                cap.release()
    return found


def find_monitors() -> dict:
    """{"display": DISPLAY or None, "monitors": [{index, left, top, width, height}], "error": str | None}.

    Monitor 0 is all monitors together (mss numbering).
    """
    display = os.environ.get("DISPLAY")
    try:
        sct = new_mss()
    except DeviceError as e:
        return {"display": display, "monitors": [], "error": str(e)}
    try:
        monitors = [
            {"index": i, "source": f"screen:{i}", **{k: int(m[k]) for k in ("left", "top", "width", "height")}}
            for i, m in enumerate(sct.monitors)
        ]
    finally:
        sct.close()
    return {"display": display, "monitors": monitors, "error": None}


def find_virtualcam_backends(width: int = 64, height: int = 48, fps: float = 30.0) -> list[dict]:
    """Each registered pyvirtualcam backend: {name, usable, device, error, hint}.

    A backend counts as usable when `pyvirtualcam.Camera` opens with it at width x height.
    """
    import pyvirtualcam
    from pyvirtualcam.camera import BACKENDS

    result = []
    for name in list(BACKENDS):
        entry = {"name": name, "usable": False, "device": None, "error": None, "hint": None}
        try:
            with pyvirtualcam.Camera(width, height, fps, backend=name) as cam:
                entry.update(usable=True, device=cam.device)
        except Exception as e:
            entry.update(error=str(e).splitlines()[0] if str(e) else type(e).__name__, hint=install_hint())
        result.append(entry)
    return result


def find_midi() -> list[dict]:
    """Each MIDI system's ports: [{api, inputs, outputs, error}] (on Linux ALSA, and JACK when
    a JACK server runs); error says why a system cannot be opened here."""
    try:
        systems = list_ports()
    except DreamcamError as e:  # mido or python-rtmidi missing
        return [{"api": None, "inputs": [], "outputs": [], "error": str(e)}]
    return [{"api": s.api, "inputs": s.inputs, "outputs": s.outputs, "error": s.error} for s in systems]


def format_midi(systems: list[dict]) -> list[str]:
    """The MIDI ports of `find_midi()`, as report lines."""
    lines = ["MIDI controllers:"]
    for s in systems:
        where = f" ({s['api']})" if s["api"] and len(systems) > 1 else ""
        if s["error"]:
            lines.append(f"  none{where}: {s['error']}")
            continue
        for i, name in enumerate(s["inputs"]):
            lines.append(f"  input {i}{where}: {name}   --midi {i}")
        for name in s["outputs"]:
            lines.append(f"  output{where}: {name}   (feedback)")
        if not s["inputs"] and not s["outputs"]:
            lines.append(f"  none{where}: no MIDI ports (plug a controller in)")
    return lines


def backend_report(spec: BackendSpec, device_types: set[str]) -> dict:
    """{name, usable, why, version} of one registered backend on a machine with these device types."""
    if spec.devices and not device_types.intersection(spec.devices):
        need = " or ".join("a CUDA GPU" if d == "cuda" else f"a {d} device" for d in spec.devices)
        why = f"needs {need} (none here)"
    else:
        why = spec.why_not()
    return {"name": spec.name, "usable": why is None, "why": why, "version": spec.version_here()}


def find_compute() -> dict:
    """{"torch": version, "gpus": [{index, name, capability, memory_gib}], "no_gpu": why or None,
    "backends": [{name, usable, why, version}], "auto": what `--backend auto` runs here,
    "engines_dir": the engine cache the compiled and tensorrt backends use}."""
    import torch  # lazy: `dreamcam devices --help` and the I/O probes need no torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "capability": f"{props.major}.{props.minor}",
                         "memory_gib": round(props.total_memory / 2**30, 1)})
    no_gpu = None
    if not gpus:
        mps = getattr(torch.backends, "mps", None)
        no_gpu = cpu_fallback_hint(cuda_build=torch.version.cuda, mps=bool(mps and mps.is_available()))
    backends = [backend_report(spec, {"cpu", "cuda"} if gpus else {"cpu"}) for spec in registered()]
    usable = {b["name"] for b in backends if b["usable"]}
    auto = next(c for c in auto_candidates("cuda" if gpus else "cpu") if c in usable)
    return {"torch": torch.__version__, "gpus": gpus, "no_gpu": no_gpu, "backends": backends, "auto": auto,
            "engines_dir": engines_dir_text()}


def probe() -> dict:
    """Everything `dreamcam devices` reports, as plain data."""
    return {"cameras": find_cameras(), "screen": find_monitors(), "virtualcam": find_virtualcam_backends(),
            "midi": find_midi(), "compute": find_compute()}


def format_report(report: dict) -> str:
    """The human-readable listing of `probe()`."""
    lines = ["cameras:"]
    for c in report["cameras"]:
        name = f" {c['name']!r}" if c["name"] else ""
        fmt = f" {c['fourcc']}" if c["fourcc"] else ""
        lines.append(f"  {c['device']}{name}: {c['width']}x{c['height']} at {c['fps']:g} fps{fmt}   --source {c['source']}")
    if not report["cameras"]:
        lines.append("  none that open" + (" (no /dev/video* nodes)" if sys.platform.startswith("linux") and not present_cameras() else ""))
    screen = report["screen"]
    lines.append(f"monitors (DISPLAY={screen['display']}):" if screen["display"] else "monitors:")
    for m in screen["monitors"]:
        what = " (all monitors)" if m["index"] == 0 else ""
        lines.append(f"  {m['index']}: {m['width']}x{m['height']} at {m['left']},{m['top']}{what}   --source {m['source']}")
    if screen["error"]:
        lines.append(f"  {screen['error']}")
    lines.append("virtual cameras (pyvirtualcam backends):")
    for b in report["virtualcam"]:
        if b["usable"]:
            lines.append(f"  {b['name']}: usable ({b['device']})   --sink virtualcam:{b['name']}")
        else:
            lines.append(f"  {b['name']}: unusable: {b['error']}")
    if not report["virtualcam"]:
        lines.append("  none registered on this OS")
    if report["virtualcam"] and not any(b["usable"] for b in report["virtualcam"]):
        lines.append(f"  to get one: {install_hint()}")
    if "midi" in report:
        lines.extend(format_midi(report["midi"]))
    if "compute" in report:  # a report of the I/O probes alone has none
        lines.extend(format_compute(report["compute"]))
    return "\n".join(lines)


def format_compute(compute: dict) -> list[str]:
    """The GPUs and backends of `find_compute()`, as report lines."""
    lines = [f"GPUs (torch {compute['torch']}):"]
    for g in compute["gpus"]:
        lines.append(f"  {g['index']}: {g['name']}, compute capability {g['capability']}, {g['memory_gib']:g} GiB")
    if compute["no_gpu"]:
        lines.append(f"  none: {compute['no_gpu']}")
    lines.append(f"engine cache: {compute['engines_dir']}   (--engines-dir DIR or $DREAMCAM_ENGINES_DIR to move it)")
    lines.append("backends:")
    for b in compute["backends"]:
        version = f" (TensorRT {b['version']})" if b["version"] else ""
        lines.append(f"  {b['name']}: usable{version}" if b["usable"] else f"  {b['name']}: unusable: {b['why']}")
    lines.append(f"  --backend auto runs {compute['auto']} here")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the listing as JSON")


def run(args: argparse.Namespace) -> int:
    """Print the listing (text or --json) to stdout; 0 always (it is a report, not a check)."""
    report = probe()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
