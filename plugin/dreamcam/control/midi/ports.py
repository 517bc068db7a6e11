"""MIDI ports of this machine through mido's python-rtmidi backend: list them, open one.

The only module here that touches the OS's MIDI system. Linux has two (ALSA, and JACK where a
JACK server runs); ALSA is asked first, JACK when ALSA cannot be opened (a container without
/dev/snd/seq) or has no ports. macOS (CoreMIDI) and Windows (WinMM) have one each.

`--midi PORT` names an input: `auto` (the first), an index (0, 1, ... as `dreamcam devices`
lists them), the full name, or a part of it (case-insensitive, naming one port only). The output
for feedback is the device's own output port, found by the same name.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dreamcam.errors import ConfigError

AUTO = "auto"
_RTMIDI = "mido.backends.rtmidi"
_LINUX_APIS = ("LINUX_ALSA", "UNIX_JACK")


@dataclass
class MidiPorts:
    """What one MIDI system offers: the API's name, input and output port names, or why none."""

    api: str | None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    error: str | None = None


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence what C libraries print on file descriptor 2 (ALSA's "cannot open /dev/snd/seq",
    JACK's "server not running"): dreamcam says it once, in its own words."""
    fd = 2  # the C libraries' stderr, whatever sys.stderr is now
    try:
        sys.stderr.flush()
        saved = os.dup(fd)
    except (AttributeError, OSError, ValueError):  # no file descriptor 2 (a GUI process)
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _backend() -> Any:
    try:
        import mido  # lazy import of a dependency: `dreamcam run` without --midi never loads it
        return mido.Backend(_RTMIDI, load=True)
    except ImportError as e:
        raise ConfigError(f"MIDI needs mido and python-rtmidi ({e}); install them with: pip install mido python-rtmidi") from e


def _apis() -> tuple[str | None, ...]:
    return _LINUX_APIS if sys.platform.startswith("linux") else (None,)


def _explain(api: str | None, e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if api == "LINUX_ALSA":
        why = ("the ALSA sequencer cannot be opened (no /dev/snd/seq: load it with 'sudo modprobe snd-seq'; "
               "in a container pass the host's /dev/snd)" if not os.path.exists("/dev/snd/seq") else f"ALSA: {text}")
        return why
    if api == "UNIX_JACK":
        return "no JACK server is running"
    return text


def list_ports() -> list[MidiPorts]:
    """Each MIDI system's ports (on Linux ALSA, then JACK; JACK only when it runs)."""
    backend = _backend()
    found = []
    for api in _apis():
        try:
            with quiet_stderr():
                entry = MidiPorts(api, backend.get_input_names(api=api), backend.get_output_names(api=api))
        except Exception as e:  # rtmidi raises its own SystemError subclasses, untyped elsewhere
            entry = MidiPorts(api, error=_explain(api, e))
        if api == "UNIX_JACK" and entry.error is not None:
            continue  # JACK is optional: a Linux machine without a JACK server has ALSA
        found.append(entry)
    return found


def pick(names: list[str], spec: str, what: str = "input") -> str:
    """The port `spec` names among `names`: auto, an index, the name or a unique part of it."""
    listed = "; ".join(f"{i}: {n}" for i, n in enumerate(names)) or "none"
    if not names:
        raise ConfigError(f"--midi {spec}: no MIDI {what}s here (plug the controller in; `dreamcam devices` lists them)")
    if spec == AUTO:
        return names[0]
    if spec.isdigit():
        i = int(spec)
        if i >= len(names):
            raise ConfigError(f"--midi {spec}: there are {len(names)} MIDI {what}s ({listed})")
        return names[i]
    if spec in names:
        return spec
    hits = [n for n in names if spec.lower() in n.lower()]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ConfigError(f"--midi {spec}: no MIDI {what} has that name; there are: {listed}")
    raise ConfigError(f"--midi {spec}: {len(hits)} MIDI {what}s match ({'; '.join(hits)}); give more of the name or its index")


def _stem(name: str) -> str:
    """A port name without what differs between a device's input and output: ALSA's client:port
    numbers and Windows' port index at the end, the client name before a colon (JACK numbers a
    device's second client), In/Out words."""
    name = re.sub(r"\s+\d+(:\d+)?$", "", name)
    name = name.rsplit(":", 1)[-1]
    return re.sub(r"\b(in|out|input|output)\b", "", name, flags=re.I).strip().lower()


def matching_output(input_name: str, outputs: list[str]) -> str | None:
    """The output port of the device whose input is `input_name`, or None."""
    if input_name in outputs:
        return input_name
    hits = [o for o in outputs if _stem(o) == _stem(input_name)]
    return hits[0] if len(hits) == 1 else None


def open_ports(spec: str, *, feedback: bool = True) -> tuple[Any, Any | None]:
    """Open the input `spec` names and, with `feedback`, the same device's output (None when it
    has none); ConfigError in one line when there is no such port or no MIDI system."""
    backend = _backend()
    systems = list_ports()
    usable = [s for s in systems if s.error is None and s.inputs]
    if not usable:
        why = "; ".join(s.error for s in systems if s.error) or "no MIDI inputs here: plug the controller in"
        raise ConfigError(f"--midi {spec}: {why} (`dreamcam devices` lists MIDI ports)")
    errors = []
    for system in usable:
        try:
            name = pick(system.inputs, spec)
        except ConfigError as e:
            errors.append(str(e))
            continue
        try:
            with quiet_stderr():
                inport = backend.open_input(name, api=system.api)
        except Exception as e:
            raise ConfigError(f"--midi {spec}: cannot open MIDI input {name!r}: {_explain(system.api, e)}") from e
        outport = None
        out_name = matching_output(name, system.outputs) if feedback else None
        if out_name is not None:
            try:
                with quiet_stderr():
                    outport = backend.open_output(out_name, api=system.api)
            except Exception:  # input without feedback is still a controller
                outport = None
        return inport, outport
    raise ConfigError(errors[0])
