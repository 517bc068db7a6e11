"""MIDI learn: what to bind (a knob, a preset or an action, as `/dreamcam/learn` and `--learn`
name it) and the binding a moved control gets for it.

Targets, as text:
    strength                 a knob with a range or on/off (`dreamcam knobs`; text knobs cannot be learned)
    preset watercolor        a preset: each press applies it
    /dreamcam/cue next       an address of dreamcam's, with its arguments: each press sends it
    off                      (or an empty string) stop learning
"""

from __future__ import annotations

from dataclasses import replace

from dreamcam.control.bindings import Binding, MidiControl, default_input
from dreamcam.errors import ConfigError
from dreamcam.knobs import OSC_PREFIX, PARAMS

STOP = ("", "off", "cancel", "stop")


def learnable() -> list[str]:
    """The knobs a MIDI control can drive: those with a range, and the on/off ones."""
    return [n for n, p in PARAMS.items() if p.kind is not str]


def parse_target(text: str) -> dict | None:
    """The binding keys a learn target asks for ({"param": "strength"}, {"preset": NAME},
    {"action": ADDRESS, "args": [...]}), None to stop learning; ConfigError when unknown."""
    text = text.strip()
    if text.lower() in STOP:
        return None
    if text.startswith(OSC_PREFIX):
        address, *args = text.split()
        return {"action": address, "args": [_number(a) for a in args]}
    word, _, rest = text.partition(" ")
    if word == "preset" and rest.strip():
        return {"preset": rest.strip()}
    if text in learnable():
        return {"param": text}
    raise ConfigError(f"cannot learn {text[:80]!r}: name a knob ({', '.join(learnable())}), 'preset NAME', "
                      "an address such as '/dreamcam/cue next', or 'off'")


def describe(target: dict) -> str:
    if "param" in target:
        return target["param"]
    if "preset" in target:
        return f"preset {target['preset']}"
    return " ".join([target["action"], *map(str, target["args"])])


def _number(word: str) -> str | int | float:
    for kind in (int, float):
        try:
            return kind(word)
        except ValueError:
            pass
    return word


def make_binding(control: MidiControl, target: dict) -> Binding:
    """The binding of a moved control to a target; ConfigError when that control cannot drive it
    (a pad for a knob with a range). A cc14 pair drives knobs with a range; for anything else
    its high half (a plain cc) is bound."""
    b = Binding(midi=control)
    if control.kind == "cc14" and target.get("param") not in [n for n in learnable() if PARAMS[n].kind is not bool]:
        b = Binding(midi=MidiControl("cc", control.number, control.channel))
    b = replace(b, input=default_input(b))
    if "preset" in target:
        return replace(b, preset=target["preset"])
    if "action" in target:
        return replace(b, action=target["action"], args=tuple(target["args"]))
    name = target["param"]
    p = PARAMS[name]
    if p.kind is bool:
        return replace(b, param=name, mode="toggle")  # buttons spring back: each press flips it
    if b.midi.kind == "note":
        raise ConfigError(f"{control} is a key or pad; {name} takes a range: move a knob or fader for it")
    return replace(b, param=name, output=(float(p.lo), float(p.hi)))
