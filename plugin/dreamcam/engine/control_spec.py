"""The names `--controlnet` / `--control` take, checked without torch (the CLI checks flags
before anything slow loads); engine/controlnet.py and engine/preprocessors.py build what they name."""

from __future__ import annotations

from collections.abc import Sequence

from dreamcam.errors import ConfigError

PREPROCESSORS = ("canny", "softedge", "depth", "input")
MAX_CONTROLNETS = 3  # the knob table has this many rows of each per-ControlNet knob (knobs.CONTROL_SLOTS)
DEFAULT_PREPROCESSOR = "canny"


def check_preprocessor_spec(spec: str) -> str:
    """A --control entry's knob name (what the `preprocessor` knob selects it by): "canny",
    "depth" for "depth:tiny"; ConfigError when it names no preprocessor."""
    name, _, arg = spec.partition(":")
    if name not in PREPROCESSORS or (arg and name != "depth"):
        raise ConfigError(f"--control takes {', '.join(PREPROCESSORS)} (depth:ID_OR_FOLDER, depth:tiny), or several "
                          f"joined by commas (canny,depth); got {spec!r}")
    return name


def check_control_flags(controlnets: Sequence[str], controls: Sequence[str]) -> list[str]:
    """--controlnet / --control counts and names, checked without loading anything (ConfigError);
    returns the --control entries, `DEFAULT_PREPROCESSOR` for a ControlNet given none."""
    if len(controlnets) > MAX_CONTROLNETS:
        raise ConfigError(f"at most {MAX_CONTROLNETS} --controlnet at once, got {len(controlnets)}")
    if len(controls) > len(controlnets):
        raise ConfigError(f"give one --control per --controlnet (in the same order); got {len(controlnets)} "
                          f"--controlnet and {len(controls)} --control")
    controls = list(controls) + [DEFAULT_PREPROCESSOR] * (len(controlnets) - len(controls))
    for spec in controls:
        names = [check_preprocessor_spec(one) for one in spec.split(",")]
        if len(set(names)) != len(names):
            raise ConfigError(f"--control {spec}: name each preprocessor once per ControlNet")
    return controls
