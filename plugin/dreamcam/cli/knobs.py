"""`dreamcam knobs`: the live-knob table, for people (an aligned table) or scripts (`--json`).

`dreamcam knobs --json > obs_scripts/dreamcam_knobs.json` writes the file the OBS script reads.
Imports no torch: it answers at once.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from dreamcam.knobs import PARAMS, describe

COLUMNS = (("knob", "name"), ("type", "type"), ("default", "default"), ("range", "range"),
           ("applies", "apply"), ("preset", "preset"), ("OSC address", "osc"), ("flag", "flag"))
MAX_DEFAULT_CHARS = 28  # a long default prompt is cut in the table (--json has it whole)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of objects (name, type, default, min, max, osc, flag, ...) instead")


def table_json() -> str:
    """The table as `--json` prints it (and obs_scripts/dreamcam_knobs.json holds it)."""
    return json.dumps(describe(), indent=2, ensure_ascii=False) + "\n"


def table_text() -> str:
    """The table for people: one aligned row per knob, its help on the line below."""
    rows = [{key: _cell(key, p.describe() | {"range": p.range_text}) for _, key in COLUMNS} | {"help": p.help}
            for p in PARAMS.values()]
    widths = [max(len(title), *(len(r[key]) for r in rows)) for title, key in COLUMNS]
    lines = ["  ".join(title.ljust(w) for (title, _), w in zip(COLUMNS, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(r[key].ljust(w) for (_, key), w in zip(COLUMNS, widths)).rstrip())
        lines.append("    " + r["help"])
    return "\n".join(lines) + "\n"


def _cell(key: str, knob: dict[str, Any]) -> str:
    if key == "preset":
        return "yes" if knob["preset"] else "no"
    if key == "default":
        text = json.dumps(knob["default"], ensure_ascii=False)
        return text if len(text) <= MAX_DEFAULT_CHARS else text[: MAX_DEFAULT_CHARS - 4] + '..."'
    return str(knob[key])


def run(args: argparse.Namespace) -> int:
    print(table_json() if args.json else table_text(), end="")
    return 0
