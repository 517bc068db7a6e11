"""THE table of live knobs, and the store the engine thread reads between frames.

Every knob that steers dreamcam while it runs is one `Param` entry in `PARAMS`: its name, type,
default, range, help, the OSC address and `dreamcam run` flag that set it, whether a presets file
may hold it, and how a change reaches the engine (`Apply`). Everything else derives from this
table: the `dreamcam run` flags, OSC validation and dispatch, controller maps, preset keys, the
controller's setter map, the `/dreamcam/status` reply and, through `describe()` (written to
obs_scripts/dreamcam_knobs.json by `dreamcam knobs --json`), the OBS script's properties.

Adding a knob is one entry here plus the code that uses it: an engine setter named in `setter`
(for `Apply.FENCE`), or the controller or runner code that reads it. The OBS script's copy of the
table as data is then written anew with `dreamcam knobs --json > obs_scripts/dreamcam_knobs.json`
(a test says when it is out of date; meanwhile the script learns a running dreamcam's table from
its /dreamcam/knobs reply).

Writers (OSC server, OBS, presets, CLI) only validate and store; the engine thread takes the
latest values between frames. This module imports no torch: `dreamcam knobs` and the CLI's
argument checks stay fast.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any

from dreamcam.engine.stability import FEEDBACK_MAX, SMOOTHING_MAX, stability_parts
from dreamcam.errors import ConfigError

MAX_PROMPT_CHARS = 4096
STABILITY_DEFAULT = 0.0  # `dreamcam run`'s stability; its parts' defaults follow from it
OSC_PREFIX = "/dreamcam/"
TYPE_NAMES = {float: "float", int: "int", bool: "bool", str: "str"}


class Apply(enum.Enum):
    """How a changed value reaches the engine. No live knob needs a re-prepare: what would
    (size, step count, cfg type, model) is a start-up flag, not a knob."""

    STORE = "store"  # nothing is written to the engine: the controller or runner reads the value (no fence)
    FENCE = "fence"  # the engine setter `setter` writes it in place between frames, after the backend's fence
    FADE = "fade"  # cross-faded in over `transition` seconds by the controller, under the fence


class KnobError(ConfigError):
    """A value a knob refuses; `kind` says why: bad_type, not_finite, out_of_range or too_long
    (the OSC server counts rejections under these kinds)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Param:
    """One live knob: its type, default and accepted range (values outside are rejected, never clamped)."""

    name: str
    kind: type  # str, float, int or bool
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    _: KW_ONLY
    label: str = ""  # the title OBS shows; the name when empty
    step: float | None = None  # slider step in the OBS script
    apply: Apply = Apply.STORE
    setter: str | None = None  # the engine method taking the value (Apply.FENCE)
    presettable: bool = True  # a presets file may set it
    max_len: int = MAX_PROMPT_CHARS  # text knobs: most characters accepted
    choices: tuple[str, ...] = ()  # text knobs: the only values accepted, when given

    def validate(self, value: Any) -> Any:
        """Return the value as this knob's type, or raise KnobError saying why not."""
        if self.kind is str:
            if not isinstance(value, str):
                raise KnobError("bad_type", f"{self.name} must be text, got {type(value).__name__}")
            if len(value) > self.max_len:
                raise KnobError("too_long", f"{self.name} is {len(value)} characters; at most {self.max_len} are accepted")
            if self.choices and value not in self.choices:
                raise KnobError("out_of_range", f"{self.name} must be one of {', '.join(self.choices)}, got {value[:80]!r}")
            return value
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise KnobError("out_of_range", f"{self.name} must be 0 or 1, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KnobError("bad_type", f"{self.name} must be a number, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise KnobError("not_finite", f"{self.name} must be finite, got {value!r}")
        if self.kind is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise KnobError("bad_type", f"{self.name} must be a whole number, got {value!r}")
                value = int(value)
        else:
            value = float(value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise KnobError(
                "out_of_range", f"{self.name} must be between {_num(self.lo)} and {_num(self.hi)}, got {value!r}"
            )
        return value

    @property
    def range_text(self) -> str:
        if self.choices:
            return "|".join(self.choices)
        return f"{_num(self.lo)}..{_num(self.hi)}" if self.lo is not None else ""

    @property
    def osc(self) -> str:
        """The OSC address that sets it."""
        return OSC_PREFIX + self.name

    @property
    def flag(self) -> str:
        """The `dreamcam run` flag that sets it at start."""
        return "--" + self.name.replace("_", "-")

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.kind]

    def describe(self) -> dict[str, Any]:
        """This knob as plain data (JSON types): what `dreamcam knobs --json` and the OBS script read."""
        return {
            "name": self.name,
            "type": self.type_name,
            "default": self.default,
            "min": self.lo,
            "max": self.hi,
            "osc": self.osc,
            "flag": self.flag,
            "help": self.help,
            "label": self.label or self.name.replace("_", " ").capitalize(),
            "step": self.step,
            "apply": self.apply.value,
            "preset": self.presettable,
            "max_len": self.max_len if self.kind is str else None,
            "choices": list(self.choices) or None,
        }


def _num(v: float | None) -> str:
    return "" if v is None else (str(int(v)) if float(v).is_integer() else str(v))


# the per-ControlNet knob rows: name suffix and which ControlNet (engine/controlnet.py MAX_CONTROLNETS)
CONTROL_SLOTS = (("", "first"), ("_2", "second"), ("_3", "third"))

PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("prompt", str, "a portrait in the style of a watercolor painting",
              'what the camera should look like; "a:0.7 | b:0.3" blends prompts', apply=Apply.FADE),
        Param("negative_prompt", str, "", "what to steer away from (cfg full/initialize)", apply=Apply.FADE),
        Param("strength", float, 0.4, "how far each frame moves from the input, 0 = least, 1 = all noise", 0.0, 1.0,
              label="Strength (0 = input, 1 = all noise)", step=0.01, apply=Apply.FENCE, setter="set_strength"),
        Param("guidance", float, 1.2, "RCFG guidance scale; > 1 turns guidance on", 0.0, 20.0,
              step=0.05, apply=Apply.FENCE, setter="set_guidance"),
        Param("delta", float, 1.0, "RCFG delta: weight of the residual noise", 0.0, 5.0,
              label="Delta (RCFG residual weight)", step=0.05, apply=Apply.FENCE, setter="set_delta"),
        Param("seed", int, 2, "noise seed", 0, 2**31 - 1, step=1, apply=Apply.FADE, setter="set_seed"),
        Param("stability", float, STABILITY_DEFAULT,
              "steadier picture, less flicker: sets smoothing and motion_guard (an expert knob set later overrides); 0 = off",
              0.0, 1.0, label="Stability (0 = off)", step=0.05),
        Param("smoothing", float, stability_parts(STABILITY_DEFAULT)["smoothing"],
              "camera smoothing: each frame's camera latent is blended with the smoothed ones before it, "
              "taking sensor noise out before the model sees it (expert; stability sets it)",
              0.0, SMOOTHING_MAX, step=0.01, apply=Apply.FENCE, setter="set_smoothing"),
        Param("feedback", float, 0.0,
              "latent feedback: how much of the previous frame's picture each frame starts from; "
              "trails and drift toward the model's own look (expert)",
              0.0, FEEDBACK_MAX, step=0.01, apply=Apply.FENCE, setter="set_feedback"),
        Param("motion_guard", float, stability_parts(STABILITY_DEFAULT)["motion_guard"],
              "on a scene cut or fast motion smoothing and feedback step back for a moment; sensitivity, 0 = off (expert)",
              0.0, 1.0, step=0.05, apply=Apply.FENCE, setter="set_motion_guard"),
        Param("attn_bank", int, 0, "cached attention: past frames each self-attention layer also attends to "
              "(0 = off); steadier detail on a still camera", 0, 4,
              label="Attention bank (frames, 0 = off)", step=1, apply=Apply.FENCE, setter="set_attn_bank"),
        Param("attn_refresh", int, 1, "cached attention: bank a new frame every N frames", 1, 16,
              label="Attention bank refresh (frames)", step=1, apply=Apply.FENCE, setter="set_attn_refresh"),
        Param("attn_fusion", float, 0.0, "cached attention: blend output features towards banked ones at least "
              "0.98 alike (0 = off)", 0.0, 1.0,
              label="Attention fusion (0 = off)", step=0.05, apply=Apply.FENCE, setter="set_attn_fusion"),
        Param("transition", float, 0.5, "prompt and seed cross-fade time in seconds", 0.0, 60.0,
              label="Transition (seconds)", step=0.1),
        Param("slew", float, 0.1, "glide time in seconds of the continuous knobs (strength, guidance, delta, ...): "
              "a fader's jitter or a preset's jump does not pop the picture; 0 = at once", 0.0, 10.0,
              label="Slew (seconds)", step=0.05),
        Param("bpm", float, 120.0, "tempo of the beat clock when no Ableton Link peer sets it (/dreamcam/tap taps it)",
              20.0, 999.0, label="Tempo (BPM)", step=0.1),
        Param("quantize", str, "off", "when a preset, cue, prompt or seed change lands: off (at once), on the next beat "
              "or bar; transition then counts beats", choices=("off", "beat", "bar"), label="Quantise changes"),
        Param("lfo", str, "", 'knobs following a tempo-synced LFO: "KNOB SHAPE BEATS DEPTH; ...", '
              'e.g. "strength sine 4 0.1" (shapes: sine, triangle, saw, random)', max_len=1024, label="LFOs"),
        # per-ControlNet knobs (--controlnet, at most 3): the first's without a number, the others' with one
        *(Param(f"control_scale{sfx}", float, 1.0,
                f"{which} ControlNet's strength: 0 = off (not run), 1 = as trained", 0.0, 2.0,
                label=f"ControlNet{sfx.replace('_', ' ')} scale", step=0.05, apply=Apply.FENCE,
                setter=f"set_control_scale{sfx}")
          for sfx, which in CONTROL_SLOTS),
        *(Param(f"preprocessor{sfx}", str, "",
                f"which of the {which} ControlNet's loaded preprocessors (--control) runs: canny, softedge, depth "
                "or input; empty = the first loaded", label=f"ControlNet{sfx.replace('_', ' ')} preprocessor",
                apply=Apply.FENCE, setter=f"set_preprocessor{sfx}", max_len=64)
          for sfx, which in CONTROL_SLOTS),
        Param("preset", str, "", "a preset from the presets file (--presets): its values apply, then those given with it",
              presettable=False, max_len=256),
        Param("cue", str, "", "the current cue of the presets file's cue list (cues = [...]); "
              "next, previous or a cue name steps to it and applies its preset", presettable=False, max_len=256),
        Param("bypass", bool, False, "pass the input through untouched", label="Bypass (pass the input through)",
              presettable=False),
    )
}


def preset_keys() -> list[str]:
    """The knobs a presets file may set, in table order."""
    return [p.name for p in PARAMS.values() if p.presettable]


def describe() -> list[dict[str, Any]]:
    """The whole table as plain data, in table order (`dreamcam knobs --json`)."""
    return [p.describe() for p in PARAMS.values()]


class ParamStore:
    """Thread-safe current values. Writers call `set`/`update`; the engine thread calls
    `take_changes` between frames and gets only the latest value of each changed knob."""

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
        """Validate all values first, then store them together; returns those that changed.

        `stability` writes its parts (`engine.stability.stability_parts`) too; an expert knob
        given in the same update wins over its part."""
        checked = {name: _param(name).validate(v) for name, v in values.items()}
        if "stability" in checked:
            checked = {**stability_parts(checked["stability"]), **checked}
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
