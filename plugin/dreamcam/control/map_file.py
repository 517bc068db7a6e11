"""A controller map file on disk: re-read when it is edited while dreamcam runs (`MapReloader`),
and written one binding at a time, as MIDI learn does (`save_binding`: the control's `[[bind]]`
table replaced or appended, every other line kept, the file replaced in one rename)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dreamcam.control.bindings import CURVES, Binding, default_input, default_mode
from dreamcam.control.maps import ControllerMap, bind_lines
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS

log = logging.getLogger(__name__)

RELOAD_POLL_S = 0.25  # how often the file's size and time are looked at
RELOAD_SETTLE_S = 0.2  # a change is read once the file has stayed unchanged this long (an editor's several writes)


class MapReloader:
    """Re-reads a map file when it changes and hands the new map to `apply` (on its own thread).

    A file that does not load (an edit in progress, a typo) is said in one line naming the line
    and the fix, and the running bindings stay; so does a map `apply` refuses (ConfigError).
    Bindings learned but not saved (the file was broken then) give way to the file's once it
    loads again: the file is what runs.
    """

    def __init__(self, path: str | os.PathLike, apply: Callable[[ControllerMap], None]) -> None:
        self.path = Path(path).expanduser()
        self.apply = apply
        self.reloads = 0  # maps applied
        self.refused = 0  # changes that did not load
        self._stamp = self._pending = self._read_stamp()
        self._since = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read_stamp(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
            return st.st_mtime_ns, st.st_size
        except OSError:
            return (-1, -1)

    def poll(self, now: float | None = None) -> bool:
        """Look at the file once; True when a new map was applied."""
        now = time.monotonic() if now is None else now
        stamp = self._read_stamp()
        if stamp == self._stamp:
            self._pending = stamp
            return False
        if stamp != self._pending:
            self._pending, self._since = stamp, now
            return False
        if now - self._since < RELOAD_SETTLE_S:
            return False
        self._stamp = stamp
        try:
            mapping = ControllerMap.load(self.path)
            self.apply(mapping)
        except ConfigError as e:
            self.refused += 1
            log.warning("%s; the running bindings stay", e)
            return False
        self.reloads += 1
        log.info("controller map %s re-read: %d bindings", self.path, len(mapping.all()))
        return True

    def start(self) -> MapReloader:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dreamcam-map-reload", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(RELOAD_POLL_S):
            try:
                self.poll()
            except Exception:  # a bug must not end reloading silently; it is logged with its trace
                log.exception("controller map reload failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def __enter__(self) -> MapReloader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def binding_toml(b: Binding) -> str:
    """A binding as a `[[bind]]` table: the keys given, defaults left out, in a fixed order."""
    lines = ["[[bind]]"]
    if b.address is not None:
        lines.append(f"address = {_toml_str(b.address)}")
    else:
        lines.append(f"{b.midi.kind} = {b.midi.number}")
        if b.midi.channel is not None:
            lines.append(f"channel = {b.midi.channel}")
    if b.param is not None:
        lines.append(f"param = {_toml_str(b.param)}")
    elif b.preset is not None:
        lines.append(f"preset = {_toml_str(b.preset)}")
    else:
        lines.append(f"action = {_toml_str(b.action)}")
        if b.args:
            lines.append(f"args = [{', '.join(_toml_value(a) for a in b.args)}]")
    if b.input != default_input(b):
        lines.append(f"input = [{_toml_value(b.input[0])}, {_toml_value(b.input[1])}]")
    p = PARAMS.get(b.param) if b.param else None
    if p is not None and p.kind in (int, float) and b.output != (float(p.lo), float(p.hi)):
        lines.append(f"output = [{_toml_value(b.output[0])}, {_toml_value(b.output[1])}]")
    if b.curve != 1.0:
        name = next((n for n, g in CURVES.items() if g == b.curve), None)
        lines.append(f"curve = {_toml_str(name) if name else _toml_value(b.curve)}")
    if p is not None and p.kind is bool and b.mode != default_mode(b):
        lines.append(f"mode = {_toml_str(b.mode)}")
    return "\n".join(lines) + "\n"


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a TOML basic string


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def save_binding(path: str | os.PathLike, binding: Binding) -> ControllerMap:
    """Write `binding` into the map file at `path`: its control's `[[bind]]` table is replaced,
    or a new one appended; every other line (comments, other bindings) stays as it was. The file
    is made when missing. Returns the map as the file now reads.

    The new text is written to a temporary file beside it and renamed over it, so a crash never
    leaves half a file. A file that does not load now (an edit in progress) is not touched:
    ConfigError naming its line and the fix.
    """
    path = Path(path).expanduser()
    text = ""
    if path.exists():
        text = path.read_text(encoding="utf-8")
        current = ControllerMap.parse(text, str(path))
        headers = bind_lines(text)
        if len(headers) != len(current.all()):
            raise ConfigError(f"{path}: write its bindings as [[bind]] tables (one per control) so that learn can "
                              "add to it, or pick another --map file")
    new_text = _with_binding(text, binding)
    written = ControllerMap.parse(new_text, str(path))  # what the file will say, checked before writing
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(new_text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return written


def _with_binding(text: str, binding: Binding) -> str:
    """The map text with `binding`'s table put in place of the tables of the controls it
    replaces (the first of them; the others dropped), or appended."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    starts = [n - 1 for n in bind_lines(text)]
    scratch = ControllerMap([])
    blocks = []  # (first line, end line) of each table the new binding replaces
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        # comments and blank lines just above the next table belong to it
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1
        old = ControllerMap.parse("".join(lines[start:end]), "").all()[0]
        scratch.osc, scratch.midi = {}, {}
        scratch.put(old)
        if scratch.put(binding) is not None:
            blocks.append((start, end))
    new = binding_toml(binding).splitlines(keepends=True)
    if not blocks:
        sep = ["\n"] if lines and lines[-1].strip() else []
        return "".join(lines + sep + new)
    (first, first_end), rest = blocks[0], blocks[1:]
    for start, end in reversed(rest):
        del lines[start:end]
    lines[first:first_end] = new
    return "".join(lines)
