"""The live parameters, declared once, and the store the engine thread reads between frames.

Everything that steers dreamcam while it runs (CLI flags, OSC addresses, the OBS script's
properties, presets) derives from `PARAMS`. Writers (OSC server, OBS, presets, CLI) only
validate and store; the engine thread takes the latest values between frames.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dreamcam.errors import ConfigError

MAX_PROMPT_CHARS = 4096


@dataclass(frozen=True)
class Param:
    """One live parameter: its type, default and accepted range (values outside are rejected)."""

    name: str
    kind: type  # str, float, int or bool
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    max_len: int = MAX_PROMPT_CHARS

    def validate(self, value: Any) -> Any:
        """Return the value as this parameter's type, or raise ConfigError saying why not."""
        if self.kind is str:
            if not isinstance(value, str):
                raise ConfigError(f"{self.name} must be text, got {type(value).__name__}")
            if len(value) > self.max_len:
                raise ConfigError(f"{self.name} is {len(value)} characters; at most {self.max_len} are accepted")
            return value
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ConfigError(f"{self.name} must be 0 or 1, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{self.name} must be a number, got {type(value).__name__}")
        if self.kind is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise ConfigError(f"{self.name} must be a whole number, got {value!r}")
                value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{self.name} must be finite, got {value!r}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ConfigError(f"{self.name} must be between {_num(self.lo)} and {_num(self.hi)}, got {value!r}")
        return value

    @property
    def range_text(self) -> str:
        return f"{_num(self.lo)}..{_num(self.hi)}" if self.lo is not None else ""


def _num(v: float | None) -> str:
    return "" if v is None else (str(int(v)) if float(v).is_integer() else str(v))


PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("prompt", str, "a portrait in the style of a watercolor painting", "what the camera should look like"),
        Param("negative_prompt", str, "", "what to steer away from (cfg full/initialize)"),
        Param("strength", float, 0.4, "how far each frame moves from the input, 0 = least, 1 = all noise", 0.0, 1.0),
        Param("guidance", float, 1.2, "RCFG guidance scale; > 1 turns guidance on", 0.0, 20.0),
        Param("delta", float, 1.0, "RCFG delta: weight of the residual noise", 0.0, 5.0),
        Param("seed", int, 2, "noise seed", 0, 2**31 - 1),
        Param("transition", float, 0.5, "prompt and seed cross-fade time in seconds", 0.0, 60.0),
        Param("preset", str, "", "name of the preset last applied", max_len=256),
        Param("bypass", bool, False, "pass the input through untouched"),
    )
}


class ParamStore:
    """Thread-safe current values. Writers call `set`/`update`; the engine thread calls
    `take_changes` between frames and gets only the latest value of each changed parameter."""

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._values = {name: p.default for name, p in PARAMS.items()}
        self._pending: dict[str, Any] = {}
        self._listeners: list[Callable[[str, Any], None]] = []
        if initial:
            self.update(initial)
            self._pending.clear()

    def get(self, name: str) -> Any:
        with self._lock:
            return self._values[_param(name).name]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def set(self, name: str, value: Any) -> bool:
        """Validate and store one value; True when it changed. Raises ConfigError when rejected."""
        return bool(self.update({name: value}))

    def update(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate all values first, then store them together; returns those that changed."""
        checked = {name: _param(name).validate(v) for name, v in values.items()}
        with self._lock:
            changed = {k: v for k, v in checked.items() if self._values[k] != v}
            self._values.update(changed)
            self._pending.update(changed)
            listeners = list(self._listeners)
        for name, value in changed.items():
            for fn in listeners:
                fn(name, value)
        return changed

    def take_changes(self) -> dict[str, Any]:
        """Values changed since the last call (latest value wins)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def subscribe(self, fn: Callable[[str, Any], None]) -> None:
        """Call fn(name, value) after each change, on the writer's thread."""
        with self._lock:
            self._listeners.append(fn)


def _param(name: str) -> Param:
    try:
        return PARAMS[name]
    except KeyError:
        raise ConfigError(f"unknown parameter {name!r}; known: {', '.join(PARAMS)}") from None


def param_names() -> Iterable[str]:
    return PARAMS.keys()
