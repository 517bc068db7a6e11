"""The LCM step schedule the engine runs: strength <-> step indices, and input checks.

`t_index_list` holds indices into a `num_inference_steps`-long LCM schedule (lower = noisier,
so more change). Users think in strength 0..1 instead; the mapping below is the documented one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dreamcam.errors import ConfigError

CFG_TYPES = ("none", "self", "initialize", "full")  # residual CFG modes (StreamDiffusion's cfg_type)


def strength_to_t_index_list(strength: float, steps: int, num_inference_steps: int = 50) -> list[int]:
    """Map strength in [0, 1] to `steps` strictly increasing indices into the LCM schedule.

    The first index is round((1 - strength) * (num_inference_steps - steps)); the others are
    spread evenly from it to the end of the schedule: i_k = i_0 + floor(k * (N - i_0) / steps).
    strength 1 starts from pure noise (index 0); strength 0 starts from the least noisy index
    that still leaves room for `steps` steps. Larger strength never gives a larger index.
    """
    _check_steps(steps, num_inference_steps)
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"strength must be between 0 and 1, got {strength}")
    n = num_inference_steps
    first = int(round((1.0 - strength) * (n - steps)))
    return [first + (k * (n - first)) // steps for k in range(steps)]


def t_index_list_to_strength(t_index_list: Sequence[int], num_inference_steps: int = 50) -> float:
    """The strength whose first index is t_index_list[0] (inverse of the mapping above)."""
    span = num_inference_steps - len(t_index_list)
    return 1.0 if span <= 0 else max(0.0, min(1.0, 1.0 - t_index_list[0] / span))


def _check_steps(steps: int, num_inference_steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a whole number >= 1, got {steps!r}")
    if steps > num_inference_steps:
        raise ConfigError(
            f"steps ({steps}) cannot exceed num_inference_steps ({num_inference_steps}); "
            "lower --steps or raise num_inference_steps"
        )


def check_t_index_list(t_index_list: Sequence[int], num_inference_steps: int | None = None) -> list[int]:
    try:
        idx = [int(i) for i in t_index_list]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"t_index_list must be a list of whole numbers, got {t_index_list!r}") from e
    if not idx:
        raise ConfigError("t_index_list must hold at least one index, for example [35]")
    if any(b <= a for a, b in zip(idx, idx[1:])):
        raise ConfigError(f"t_index_list must be strictly increasing, got {idx}")
    hi = num_inference_steps
    if idx[0] < 0 or (hi is not None and idx[-1] >= hi):
        bound = f"[0, {hi})" if hi is not None else ">= 0"
        raise ConfigError(f"t_index_list values must lie in {bound}, got {idx}")
    return idx


def check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0 or value % 8:
        hint = f" (try {max(8, int(value) // 8 * 8)})" if isinstance(value, (int, np.integer)) else ""
        raise ConfigError(f"{name} must be a positive multiple of 8, got {value!r}{hint}")
    return int(value)


def check_finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must be a number, got {value!r}") from e
    if not np.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return v
