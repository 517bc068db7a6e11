"""A MIDI controller stand-in built on mido's own port API (no MIDI device exists on the test
machines): `StandInDevice` is a `mido.ports.BaseIOPort` whose input is what the test "moves"
and whose output keeps what dreamcam sends back (feedback), as a device would show it."""

from __future__ import annotations

import queue
import threading

import mido
from mido.ports import BaseIOPort


class StandInDevice(BaseIOPort):
    """A mido IO port standing in for a MIDI controller: `move(msg)` is the hand on a fader or
    pad (the message arrives on dreamcam's input), `sent` the messages dreamcam sent to it."""

    def _open(self, **kwargs) -> None:
        self._moves: queue.Queue = queue.Queue()
        self.sent: list[mido.Message] = []
        self._sent_lock = threading.Lock()

    def move(self, *msgs: mido.Message) -> None:
        for msg in msgs:
            self._moves.put(msg)

    def _receive(self, block: bool = True):
        try:
            return self._moves.get(block=False)
        except queue.Empty:
            return None

    def _send(self, msg: mido.Message) -> None:
        with self._sent_lock:
            self.sent.append(msg)

    def sent_copy(self) -> list[mido.Message]:
        with self._sent_lock:
            return list(self.sent)

    def last_cc(self, control: int) -> int | None:
        values = [m.value for m in self.sent_copy() if m.type == "control_change" and m.control == control]
        return values[-1] if values else None

    def last_note(self, note: int) -> str | None:
        """"on" or "off": the last light state dreamcam sent for a note."""
        states = [("on" if m.type == "note_on" and m.velocity > 0 else "off") for m in self.sent_copy()
                  if m.type in ("note_on", "note_off") and m.note == note]
        return states[-1] if states else None


def cc(control: int, value: int, channel: int = 1) -> mido.Message:
    return mido.Message("control_change", control=control, value=value, channel=channel - 1)


def note_on(note: int, channel: int = 1, velocity: int = 100) -> mido.Message:
    return mido.Message("note_on", note=note, velocity=velocity, channel=channel - 1)


def note_off(note: int, channel: int = 1) -> mido.Message:
    return mido.Message("note_off", note=note, velocity=0, channel=channel - 1)
