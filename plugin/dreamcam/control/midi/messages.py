"""MIDI messages (mido's) as dreamcam reads and writes them: a control event from a message, the
messages that show a value on a control, and which ports hand messages over by callback."""

from __future__ import annotations

from typing import Any

import mido

from dreamcam.control.bindings import MIDI_MAX, MidiControl


def messages(control: MidiControl, level: int, channel: int, *, on: bool) -> list[mido.Message]:
    """What to send (channel 0..15) to show `level` on a control: a cc its value, a cc14 pair
    both halves (high, then low), a note on (velocity 127) or off as `on` says."""
    if control.kind == "note":
        return [mido.Message("note_on", channel=channel, note=control.number, velocity=127) if on else
                mido.Message("note_off", channel=channel, note=control.number, velocity=0)]
    if control.kind == "cc14":
        return [mido.Message("control_change", channel=channel, control=control.number, value=level >> 7),
                mido.Message("control_change", channel=channel, control=control.number + 32, value=level & 127)]
    return [mido.Message("control_change", channel=channel, control=control.number, value=level)]


def takes_callback(port: Any) -> bool:
    """True for mido's rtmidi input ports, which call a callback on their own thread."""
    return type(port).__module__ == "mido.backends.rtmidi" and hasattr(port, "callback")


def raw(msg: Any) -> int:
    """The value byte of a control message as sent: a cc's value, a note's velocity (0: off)."""
    return msg.value if msg.type == "control_change" else (msg.velocity if msg.type == "note_on" else 0)


def event(msg: Any) -> tuple[str, int, int, int] | None:
    """(kind, number, channel 1..16, value) of a control message; None for other messages."""
    kind = getattr(msg, "type", None)
    if kind == "control_change":
        return "cc", msg.control, msg.channel + 1, msg.value
    if kind == "note_on":
        return "note", msg.note, msg.channel + 1, MIDI_MAX["note"] if msg.velocity > 0 else 0
    if kind == "note_off":
        return "note", msg.note, msg.channel + 1, 0
    return None
