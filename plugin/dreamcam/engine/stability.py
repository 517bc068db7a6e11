"""The `stability` umbrella: one 0..1 knob mapped onto the expert knobs of each steadying technique.

Pure Python (no torch): the knob table (`dreamcam.knobs`) imports it to expand a stability value
into its parts when the value is stored, and to derive the parts' defaults.

How the umbrella and the experts interact: setting `stability` (flag, OSC, preset, OBS) writes
its parts into the knob store, as if each had been set, so the status reply, OSC and the OBS
script show the expert values it chose. An expert knob set afterwards (or in the same message,
preset or command line) overrides its part until `stability` is set again.
"""

from __future__ import annotations

# latent feedback: above this the picture smears into the previous frames and stops following
# the input (docs/stability.md); the knob's range ends here
FEEDBACK_MAX = 0.9

# `stability` at 1 gives this much feedback; the part grows linearly from 0. Measured on the toy
# model at 128x128 (docs/stability.md): flicker falls to 0.59x at feedback 0.4 (stability 0.8)
# and no further past 0.5, while the output follows the input less
FEEDBACK_AT_FULL = 0.5

# the motion guard's sensitivity whenever feedback is on (0 = off)
MOTION_GUARD_ON = 0.5


def stability_parts(stability: float) -> dict[str, float]:
    """The expert knob values for a stability in 0..1 (0 gives every part 0: today's engine)."""
    s = min(max(float(stability), 0.0), 1.0)
    parts = {
        "feedback": round(FEEDBACK_AT_FULL * s, 3),
        "motion_guard": MOTION_GUARD_ON if s > 0 else 0.0,
    }
    # --- cached attention (attn_bank, attn_refresh, attn_fusion): the lead adds its parts here at merge
    return parts
