"""Other tools' OSC address spaces, as rows of data onto dreamcam's knob table (`--osc-compat`).

TouchDesigner users who drive StreamDiffusionTD, and daydream Scope users, already have patches
sending their own flat addresses. With `--osc-compat td` or `--osc-compat scope` the same OSC
server (dispatch.py) also takes those addresses: each `Alias` row names the address, the knob it
sets and, where the value differs, the conversion; a row whose knob the table lacks (a knob
another feature adds, such as `feedback`) is left out, so its address is then unknown. Addresses
of theirs with no counterpart here are listed in `UNMAPPED` (for the docs) and counted as
unknown addresses, like any other.

Where the addresses come from (read, not copied):
- StreamDiffusionTD (dotsimulate): its OSC parameter handler (td_osc_handler.py, v0.3.0, and the
  older main_sdtd.py of v0.2.5) listens on UDP 8247 for `/prompt`, `/negative_prompt`, `/seed`,
  `/guidance_scale`, `/delta`, `/t_list` (the indices as separate int arguments), `/prompt_list`
  and `/seed_list` (one JSON string, `[[value, weight], ...]`), `/latent_feedback_strength`, ...;
  it reports to 8248: `/server_active 1` every second, `/stream-info/state`, `/stream-info/fps`,
  `/framecount`, `/stream-info/output-name`.
- daydream Scope: docs/osc.md and src/scope/server/osc_docs.py list the runtime parameters at
  flat `/scope/<param>` addresses (`prompt`, `noise_scale`, `transition_steps`, `paused`, ...);
  a graph node the user exposes gets `/scope/<node-slug>/<param>` (a Tempo node titled "Tempo":
  `/scope/tempo/tempoBpm`). Scope sends no OSC replies (it reports over HTTP).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dreamcam.control.osc.maps import Rejected, number_arg, param_arg
from dreamcam.engine.schedule import t_index_list_to_strength
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS

log = logging.getLogger(__name__)

COMPAT_MODES = ("off", "td", "scope")
TD_LISTEN_PORT = 8247  # where StreamDiffusionTD's component sends its OSC
TD_REPORT_PORT = 8248  # where it listens for the reports (/stream-info/fps, ...)
REPORT_INTERVAL_S = 1.0  # StreamDiffusionTD's heartbeat sends once a second


# ------------------------------------------------------------------ value conversions


def same(name: str, args: list[Any], address: str) -> Any:
    """The single argument as the knob takes it (text or a finite number)."""
    return param_arg(name, args, address)


def _json_pairs(args: list[Any], address: str) -> list[tuple[Any, float]]:
    """StreamDiffusionTD's `[[value, weight], ...]` JSON string -> pairs; Rejected when it is not."""
    if len(args) != 1 or not isinstance(args[0], str):
        raise Rejected("bad_args", f"{address} takes 1 string: JSON such as [[\"a cat\", 0.7], [\"a dog\", 0.3]]")
    try:
        data = json.loads(args[0])
        pairs = [(v, float(w)) for v, w in data]
    except (ValueError, TypeError) as e:
        raise Rejected("bad_args", f"{address} takes JSON [[value, weight], ...]: {e}") from None
    if not pairs:
        raise Rejected("bad_args", f"{address} got an empty list")
    if any(w != w or w in (float("inf"), float("-inf")) for _, w in pairs):
        raise Rejected("not_finite", f"{address}: weights must be finite")
    if any(w < 0 for _, w in pairs):
        raise Rejected("out_of_range", f"{address}: weights must be >= 0")
    return pairs


def prompt_list(name: str, args: list[Any], address: str) -> str:
    """`[[text, weight], ...]` -> dreamcam's blend syntax "text:0.7 | text:0.3" (one entry: its text)."""
    pairs = _json_pairs(args, address)
    if any(not isinstance(t, str) for t, _ in pairs):
        raise Rejected("bad_args", f"{address}: each entry is [text, weight]")
    if len(pairs) == 1:
        return pairs[0][0]
    if any("|" in t for t, _ in pairs):
        raise Rejected("bad_args", f"{address}: a blended prompt cannot contain '|' (dreamcam's blend separator)")
    return " | ".join(f"{t.strip()}:{w:g}" for t, w in pairs)


_said_seed_blend = False


def seed_list(name: str, args: list[Any], address: str) -> int:
    """`[[seed, weight], ...]` -> the heaviest seed: dreamcam's engine has no seed blend (a seed
    change cross-fades the noise over `transition` instead). Said once in the log."""
    global _said_seed_blend
    pairs = _json_pairs(args, address)
    seed, _ = max(pairs, key=lambda p: p[1])
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise Rejected("bad_args", f"{address}: each entry is [seed, weight] with a whole-number seed")
    if len(pairs) > 1 and not _said_seed_blend:
        _said_seed_blend = True
        log.info("%s: dreamcam does not blend seeds; it uses the heaviest one (%d) and cross-fades to it", address, seed)
    return seed


def t_list(name: str, args: list[Any], address: str) -> float:
    """/t_list 32 45 (one int argument per step) -> the strength whose first index that is
    (dreamcam's step count is a start flag, --steps; live it steers strength, over a 50-step schedule)."""
    if not args:
        raise Rejected("bad_args", f"{address} takes the step indices, e.g. 32 45")
    idx = [number_arg([a], address) for a in args]
    if any(i != int(i) or not 0 <= i < 50 for i in idx) or any(b <= a for a, b in zip(idx, idx[1:])):
        raise Rejected("out_of_range", f"{address} takes increasing whole indices in 0..49, got {idx}")
    return round(t_index_list_to_strength([int(i) for i in idx], 50), 4)


# ------------------------------------------------------------------ the tables


@dataclass(frozen=True)
class Alias:
    """One of their addresses: the knob it sets, and how its arguments become the knob's value."""

    address: str
    knob: str
    convert: Callable[[str, list[Any], str], Any] = same
    note: str = ""  # for the docs: what the conversion does


@dataclass(frozen=True)
class Report:
    """A message the tool's own server would send, made from dreamcam's status reply."""

    address: str
    value: Callable[[dict[str, Any]], Any]


TD_ALIASES = (
    Alias("/prompt", "prompt"),
    Alias("/negative_prompt", "negative_prompt"),
    Alias("/seed", "seed"),
    Alias("/guidance_scale", "guidance"),
    Alias("/delta", "delta"),
    Alias("/t_list", "strength", t_list, "the first index becomes strength (50-step schedule)"),
    Alias("/prompt_list", "prompt", prompt_list, 'JSON [[text, weight], ...] becomes "text:w | text:w"'),
    Alias("/seed_list", "seed", seed_list, "the heaviest seed (dreamcam does not blend seeds)"),
    Alias("/latent_feedback_strength", "feedback"),
    Alias("/controlnet_weight", "control_scale"),
)
TD_REPORTS = (
    Report("/server_active", lambda st: 1),
    Report("/stream-info/state", lambda st: "local_loading_models" if st.get("loading") else "local_ready"),
    Report("/stream-info/fps", lambda st: float(st.get("fps", 0.0))),
    Report("/framecount", lambda st: int(st.get("frames", 0))),
    Report("/stream-info/output-name", lambda st: "dreamcam"),
)
SCOPE_ALIASES = (
    Alias("/scope/prompt", "prompt"),
    Alias("/scope/noise_scale", "strength", note="both 0..1: how much noise each frame starts from"),
    Alias("/scope/tempo/tempoBpm", "bpm", note="a Tempo node exposed under its default address"),
)

# Their addresses with no counterpart here, and why (docs/control.md lists them; they are
# counted as unknown addresses).
UNMAPPED = {
    "td": {
        "/sdmode": "txt2img is not a live mode here",
        "/num_inference_steps": "a start flag (--num-inference-steps)",
        "/stop, /pause, /play, /start_streaming, /stop_streaming, /unload, /process_frame, /frame_ack":
            "stream control: dreamcam runs until stopped (bypass is /dreamcam/bypass)",
        "/prompt_interpolation_method, /seed_interpolation_method, /slerp": "prompts blend linearly, seeds by slerp, always",
        "/controlnets, /use_controlnet, /ipadapter_*, /lora_weights, /textual_inversion_dict":
            "model set-up, chosen at start",
        "/fx/*, /gaussian_prompt, /Interpval1, /feedback_safe, /use_cached_attn*, /td_buffer_name, /max_fps, /get_status":
            "no such control",
    },
    "scope": {
        "/scope/transition_steps": "transitions are timed in seconds (/dreamcam/transition), not in generation steps",
        "/scope/paused": "no pause; /dreamcam/bypass passes the input through instead",
        "/scope/denoising_step_list": "a start flag (--t-index-list)",
        "/scope/input_mode, /scope/interpolation_method, /scope/temporal_interpolation_method": "no such control",
        "/scope/noise_controller, /scope/manage_cache, /scope/reset_cache, /scope/kv_cache_attention_bias, "
        "/scope/vace_context_scale": "StreamDiffusionV2 (video model) controls",
        "/scope/<node>/<param>": "graph nodes other than a Tempo node",
    },
}


class Compat:
    """The aliases of one `--osc-compat` mode whose knob the table has, by address."""

    def __init__(self, mode: str) -> None:
        if mode not in COMPAT_MODES:
            raise ConfigError(f"--osc-compat takes {' | '.join(COMPAT_MODES)}, got {mode!r}")
        rows = {"td": TD_ALIASES, "scope": SCOPE_ALIASES}.get(mode, ())
        self.mode = mode
        self.aliases = {a.address: a for a in rows if a.knob in PARAMS}
        self.reports = TD_REPORTS if mode == "td" else ()
        self.report_to = ("127.0.0.1", TD_REPORT_PORT) if mode == "td" else None

    def values(self, address: str, args: list[Any]) -> dict[str, Any] | None:
        """{knob: raw value} for one of the aliases (the dispatcher checks it), None when the
        address is not one; raises Rejected for bad arguments."""
        alias = self.aliases.get(address)
        if alias is None:
            return None
        return {alias.knob: alias.convert(alias.knob, args, address)}

    def report(self, status: dict[str, Any]) -> list[tuple[str, Any]]:
        """(address, value) of each report, from a /dreamcam/state dict."""
        return [(r.address, r.value(status)) for r in self.reports]
