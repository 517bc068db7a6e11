"""Named presets from a TOML file: load, validate against the knob table, apply, reload on change.

File format: each top-level table is one preset, its name the table name. A preset holds any
of the knobs the knob table marks presettable (`dreamcam knobs` lists them, with their ranges);
keys left out keep their current value when the preset is applied.

    [watercolor]
    prompt = "a portrait in the style of a watercolor painting"
    strength = 0.45
    transition = 1.5

    ["neon city"]                 # names with spaces are quoted
    prompt = "a neon city at night:0.7 | rain:0.3"   # weighted blend, see prompts.parse_prompt
    negative_prompt = "blurry"
    seed = 7

A cue list, for a show: `cues = ["watercolor", "neon city", "sketch"]` at the top of the file
(before the first [table], as TOML wants), each a preset of the file. `/dreamcam/cue next`,
`previous` or a cue's name steps through it (the `cue` knob holds the current one).

The file is re-read when its modification time or size changes (`maybe_reload`, cheap to call
every frame) and has then stayed unchanged for a moment (an editor that saves in several writes is
not read half-way); a broken file then keeps the last good presets and logs one line naming the
file and the line. At start-up a missing or broken file is a ConfigError.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dreamcam.control.lfo import parse_lfos
from dreamcam.engine.prompts import parse_prompt
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS, ParamStore, preset_keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

MAX_NAME_CHARS = PARAMS["preset"].max_len
MAX_FILE_BYTES = 4 * 1024 * 1024  # thousands of presets; more is not a presets file
_MISSING = (-1, -1)  # the stamp of a file that cannot be read


CUES_KEY = "cues"  # the top-level key of the cue list


def parse_presets(text: str, source: str = "<presets>") -> dict[str, dict[str, Any]]:
    """Parse and validate presets TOML text; ConfigError names `source`, the line and the fix."""
    return parse_presets_and_cues(text, source)[0]


def parse_presets_and_cues(text: str, source: str = "<presets>") -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The presets of a presets file, and its cue list (empty without `cues = [...]`).

    Time grows linearly with the file: the header lines are indexed once, and a key's line is
    looked for only when that key is wrong."""
    data = load_toml(text, source)
    cues = data.pop(CUES_KEY, [])
    keys = preset_keys()
    lines = text.splitlines()
    headers = _header_lines(lines)
    presets: dict[str, dict[str, Any]] = {}
    for name, table in data.items():
        line = headers.get(name)
        at = f"{source}: line {line}" if line else source

        def at_key(key: str) -> str:
            key_line = _key_line(lines, line, key)
            return f"{source}: line {key_line}" if key_line else at

        if not isinstance(table, dict):
            raise ConfigError(
                f"{at}: {name!r} is a {type(table).__name__}, expected a table: "
                f'write presets as [name] sections, for example [{_quote(name)}] then prompt = "..."'
            )
        if not name or len(name) > MAX_NAME_CHARS:
            raise ConfigError(f"{at}: preset names must be 1..{MAX_NAME_CHARS} characters, got {len(name)}")
        values = {}
        for key, value in table.items():
            if key not in keys:
                raise ConfigError(f"{at_key(key)}: preset {name!r} has unknown key {key!r}; known: {', '.join(keys)}")
            try:
                values[key] = PARAMS[key].validate(value)
            except ConfigError as e:
                raise ConfigError(f"{at_key(key)}: preset {name!r}: {e}") from None
        if "prompt" in values:
            try:
                parse_prompt(values["prompt"])
            except ConfigError as e:
                raise ConfigError(f"{at_key('prompt')}: preset {name!r}: {e}") from None
        if "lfo" in values:
            try:
                parse_lfos(values["lfo"])
            except ConfigError as e:
                raise ConfigError(f"{at_key('lfo')}: preset {name!r}: {e}") from None
        presets[name] = values
    return presets, _check_cues(cues, presets, source, text.splitlines())


def _check_cues(cues: Any, presets: dict[str, Any], source: str, lines: list[str]) -> list[str]:
    def where() -> str:  # looked for only when the list is wrong
        line = next((i for i, t in enumerate(lines, 1) if re.match(rf"\s*{CUES_KEY}\s*=", t)), None)
        return f"{source}: line {line}" if line else source

    if not isinstance(cues, list) or not all(isinstance(c, str) for c in cues):
        raise ConfigError(f'{where()}: {CUES_KEY} must be a list of preset names, such as {CUES_KEY} = ["watercolor", "sketch"] '
                          "(a preset cannot be named cues)")
    missing = [c for c in cues if c not in presets]
    if missing:
        raise ConfigError(f"{where()}: the cue list names {', '.join(map(repr, missing))}, which the file has no preset of; "
                          f"known: {', '.join(presets) or '(none)'}")
    return list(cues)


def load_toml(text: str, source: str) -> dict[str, Any]:
    """tomllib.loads with an error of one line: `SOURCE: line L, column C: what is wrong`.

    A leading UTF-8 byte-order mark is skipped: Windows PowerShell 5.1 (`Set-Content -Encoding
    UTF8`, `Out-File -Encoding utf8`) and some editors write one, and tomllib rejects it.
    """
    try:
        return tomllib.loads(text.removeprefix("\ufeff"))
    except RecursionError as e:  # tomllib recurses per nesting level: [[[[...]]]] a thousand deep
        raise ConfigError(f"{source}: arrays or tables nested too deep to read (fix the TOML syntax there)") from e
    except tomllib.TOMLDecodeError as e:
        msg = getattr(e, "msg", None) or str(e)
        line, col = getattr(e, "lineno", None), getattr(e, "colno", None)
        m = _AT.search(msg)
        if line is None and m:  # before Python 3.14 the position is only in the message
            line, col, msg = int(m[1]), int(m[2]), msg[: m.start()].rstrip()
        where = f"line {line}, column {col}: " if line is not None else ""
        raise ConfigError(f"{source}: {where}{msg} (fix the TOML syntax there)") from e


_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'


_HEADER = re.compile(r"^\s*\[(?!\[)\s*(.*?)\s*\]")


def _header_lines(lines: list[str]) -> dict[str, int]:
    """1-based line of each `[name]` header (bare, "quoted" or 'quoted'), by name: one pass."""
    out: dict[str, int] = {}
    for i, line in enumerate(lines, 1):
        m = _HEADER.match(line)
        if m:
            name = m[1]
            if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
                name = name[1:-1]
            out.setdefault(name, i)
    return out


def _key_line(lines: list[str], header: int | None, key: str) -> int | None:
    """1-based line of `key = ...` in the table whose header is on line `header` (the line
    that is wrong, not just its preset's header), if it can be found before the next table."""
    if header is None:
        return None
    variants = {re.escape(key), re.escape(f'"{key}"'), re.escape(f"'{key}'")}
    pattern = re.compile(r"^\s*(?:" + "|".join(variants) + r")\s*=")
    for i in range(header, len(lines)):  # lines[header] is the line after the header
        if lines[i].lstrip().startswith("["):
            return None
        if pattern.match(lines[i]):
            return i + 1
    return None


def read_presets_text(path: Path) -> str:
    """The file's text, at most MAX_FILE_BYTES (ConfigError beyond: /dev/zero would never end);
    OSError and UnicodeDecodeError as reading raises them."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"presets file {path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; "
            "pass a TOML file of presets to --presets"
        )
    return data.decode("utf-8")


class PresetLibrary:
    """The presets of one TOML file, kept current with the file on disk.

    Args:
        path: the presets file; must exist and parse at construction (else ConfigError).
        min_interval: seconds between two disk checks of `maybe_reload` (default 0.5).
        settle: seconds a changed file must stay unchanged before it is read (default 0.2; 0 reads
            a change at once). With the default interval a save is live 0.5 to 1 s later.
    """

    def __init__(self, path: str | os.PathLike, *, min_interval: float = 0.5, settle: float = 0.2) -> None:
        self.path = Path(path).expanduser()  # cmd.exe and PowerShell do not expand ~
        self.min_interval = float(min_interval)
        self.settle = float(settle)
        self._pending: tuple[tuple[int, int], float] | None = None  # a changed stamp, and when it was first seen
        self._lock = threading.Lock()
        self._last_check = 0.0
        self._bad_stamp: tuple[int, int] | None = None
        self.reloads = 0
        self.errors = 0
        try:
            stamp = self._stamp()
            text = read_presets_text(self.path)
        except OSError as e:
            raise ConfigError(
                f"cannot read presets file {self.path}: {e.strerror or e}; pass an existing TOML file to --presets"
            ) from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"presets file {self.path} is not UTF-8 text: {e}") from e
        self._presets, self._cues = parse_presets_and_cues(text, str(self.path))
        self._stamp_loaded = stamp
        log.info("loaded %d presets from %s", len(self._presets), self.path)

    def _stamp(self) -> tuple[int, int]:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size

    def names(self) -> list[str]:
        """Preset names in file order."""
        with self._lock:
            return list(self._presets)

    def cues(self) -> list[str]:
        """The cue list (preset names in show order); empty when the file has none."""
        with self._lock:
            return list(self._cues)

    def step_cue(self, current: str, how: str) -> str:
        """The cue after (`next`) or before (`previous`) `current`, or the cue named `how`; the
        first cue when `current` is none of them; the list does not wrap around. ConfigError
        when there is no cue list or no cue of that name."""
        cues = self.cues()
        if not cues:
            raise ConfigError(f"{self.path} has no cue list; add {CUES_KEY} = [\"preset\", ...] at its top")
        i = cues.index(current) if current in cues else None
        if how in ("next", "previous"):
            if i is None:
                return cues[0]
            return cues[min(i + 1, len(cues) - 1)] if how == "next" else cues[max(i - 1, 0)]
        if how not in cues:
            raise ConfigError(f"no cue named {how!r} in {self.path}; cues: {', '.join(cues)} (or next, previous)")
        return how

    def get(self, name: str) -> dict[str, Any]:
        """The values of preset `name` (a copy); ConfigError when there is none of that name."""
        with self._lock:
            values = self._presets.get(name)
            known = list(self._presets)
        if values is None:
            raise ConfigError(f"no preset named {name!r} in {self.path}; known: {', '.join(known) or '(none)'}")
        return dict(values)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._presets

    def apply(self, name: str, store: ParamStore) -> dict[str, Any]:
        """Set the preset's values and `preset=name` in one atomic store update; returns the changes."""
        return store.update({**self.get(name), "preset": name})

    def maybe_reload(self, *, force: bool = False) -> bool:
        """Re-read the file when it changed on disk; True when new presets were loaded.

        Checks the disk at most every `min_interval` seconds unless `force`, and reads a changed
        file only once it has kept the same stamp for `settle` seconds (`force` reads it at once).
        A file that fails to read or parse keeps the last good presets and logs one warning per
        broken version.
        """
        now = time.monotonic()
        if not force and now - self._last_check < self.min_interval:
            return False
        self._last_check = now
        try:
            stamp = self._stamp()
        except OSError as e:
            return self._broken(_MISSING, f"cannot read presets file {self.path}: {e.strerror or e}")
        if stamp == self._stamp_loaded or stamp == self._bad_stamp:
            self._pending = None
            return False
        if self._pending is None or self._pending[0] != stamp:
            self._pending = (stamp, now)
        if not force and now - self._pending[1] < self.settle:
            return False  # still being written, perhaps: read it at a later check
        self._pending = None
        try:
            presets, cues = parse_presets_and_cues(read_presets_text(self.path), str(self.path))
        except (OSError, UnicodeDecodeError, ConfigError) as e:
            return self._broken(stamp, str(e))
        with self._lock:
            self._presets, self._cues = presets, cues
        self._stamp_loaded, self._bad_stamp = stamp, None
        self.reloads += 1
        log.info("reloaded %d presets from %s", len(presets), self.path)
        return True

    def _broken(self, stamp: tuple[int, int], why: str) -> bool:
        if stamp != self._bad_stamp:
            self.errors += 1
            log.warning("%s; keeping the last good presets (%s)", why, ", ".join(self.names()) or "none")
        self._bad_stamp = stamp
        return False
