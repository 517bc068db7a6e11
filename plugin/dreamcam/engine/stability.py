"""The `stability` umbrella: one 0..1 knob mapped onto the expert knobs of each steadying technique.

Pure Python (no torch): the knob table (`dreamcam.knobs`) imports it to expand a stability value
into its parts when the value is stored, and to derive the parts' defaults.

How the umbrella and the experts interact: setting `stability` (flag, OSC, preset, OBS) writes
its parts into the knob store, as if each had been set, so the status reply, OSC and the OBS
script show the expert values it chose. An expert knob set afterwards (or in the same message,
preset or command line) overrides its part until `stability` is set again.
"""

from __future__ import annotations

# latent feedback (an expert knob the umbrella leaves alone: feeding the denoised picture back drifts
# it to the model's own fixed point, docs/stability.md): above this the picture smears into the
# previous frames and stops following the input; the knob's range ends here
FEEDBACK_MAX = 0.9

# camera smoothing (the input-side temporal filter, engine/feedback.py): the knob's range ends here
SMOOTHING_MAX = 0.9

# `stability` at 1 gives this much smoothing; the part grows linearly from 0. Measured on the toy
# model at 128x128 (docs/stability.md): flicker on a still noisy camera falls to 0.50x at 0.4
# (stability 0.8) with the output's likeness to its input unchanged; more also lags slow motion more
SMOOTHING_AT_FULL = 0.5

# the motion guard's sensitivity whenever smoothing is on (0 = off)
MOTION_GUARD_ON = 0.5


def stability_parts(stability: float) -> dict[str, float]:
    """The expert knob values for a stability in 0..1 (0 gives every part 0: today's engine)."""
    s = min(max(float(stability), 0.0), 1.0)
    parts = {
        "smoothing": round(SMOOTHING_AT_FULL * s, 3),
        "motion_guard": MOTION_GUARD_ON if s > 0 else 0.0,
    }
    # --- cached attention (attn_bank, attn_refresh, attn_fusion): the lead adds its parts here at merge
    return parts
