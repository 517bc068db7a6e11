"""Prompt blend syntax, parsed without torch (the CLI, OSC server and presets check prompts with it).

A prompt with `|` is a weighted blend of sub-prompts, each optionally ending in `:WEIGHT`
(a non-negative number; 1 when left out). Weights are relative: they are scaled to sum to 1.
`"a cat:0.7 | a dog:0.3"` is 70 % cat, 30 % dog; `"a cat | a dog"` is half each. A prompt
without `|` is used as written (so `"16:9 film still"` keeps its colon).
"""

from __future__ import annotations

import math
import re

from dreamcam.errors import ConfigError

MAX_BLEND_PARTS = 16
_WEIGHT = re.compile(r"^(?P<text>.*?)\s*:\s*(?P<w>\d+(?:\.\d*)?|\.\d+)\s*$", re.DOTALL)


def parse_prompt(prompt: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) parts whose weights sum to 1 (see the module doc)."""
    if "|" not in prompt:
        return [(prompt, 1.0)]
    parts = []
    for raw in prompt.split("|"):
        m = _WEIGHT.match(raw)
        text, w = (m["text"].strip(), float(m["w"])) if m else (raw.strip(), 1.0)
        if not text:
            raise ConfigError(f"prompt blend part {raw!r} has no text; write 'a cat:0.7 | a dog:0.3'")
        parts.append((text, w))
    if len(parts) > MAX_BLEND_PARTS:
        raise ConfigError(f"a prompt blend has at most {MAX_BLEND_PARTS} parts, got {len(parts)}")
    total = sum(w for _, w in parts)
    if not math.isfinite(total) or total <= 0:
        raise ConfigError(f"prompt blend weights must be finite and not all 0, got {[w for _, w in parts]}")
    return [(t, w / total) for t, w in parts]
