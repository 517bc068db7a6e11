"""A MIDI controller steering dreamcam: messages from a mido input port, through the controller
map's MIDI bindings, into the same checks and store as OSC (`OscDispatcher.perform`); learn; and
feedback on the device's output port.

Messages: a control change is a `cc` control (0..127) or half of a `cc14` pair (the high half on
cc n, n < 32, the low half on cc n+32; the high half alone moves the knob at once, the low half
then refines it); note-on with a velocity above 0 is a press of a `note` control, note-off (or
velocity 0) its release. Other messages (clock, aftertouch, program change) are ignored.

Learn: `arm(target)` (from `/dreamcam/learn TARGET`, the OBS script or `--learn`'s console) makes
the next control moved drive the target: its binding is put into the running map and written to
the map file. A control sent by a cc below 32 is held back 0.15 s to see whether its low half
(cc n+32) follows: then it is learned as a cc14 pair. With `learning` on (`--learn`), a control
moved while nothing is armed is remembered, so that arming a target right after binds that one.

Feedback: every change of a knob, from wherever (OSC, OBS, presets, another control), is sent to
the controls bound to it: a cc the value through the binding's range and curve inverted, a pair
both halves, a note on (127) or off for on/off knobs and for the preset a pad applies. The
control whose own movement made a change does not get it back (a motor fader would fight the
hand moving it); a toggle or preset pad does, so its light shows the new state. Each control is
sent a value only when it differs from the last one sent to it, and a message from the device
equal to one sent to it in the last ECHO_S is taken as the device's echo (some controllers echo
what they receive), not a hand: a toggle does not flip back, a knob is not re-rounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from dreamcam.control.bindings import MIDI_MAX, Binding, MidiControl, Rejected
from dreamcam.control.coalesce import Latest
from dreamcam.control.map_file import save_binding
from dreamcam.control.maps import ControllerMap
from dreamcam.control.midi.learn import describe, make_binding, parse_target
from dreamcam.control.midi.messages import event, messages, raw, takes_callback
from dreamcam.control.osc.dispatch import LEARN as LEARN_ADDRESS
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS

log = logging.getLogger(__name__)

POLL_S = 0.004  # how often a port without callbacks is read (mido's own port classes)
TICK_S = 0.05  # how often learn checks its wait for a pair's low half, where the port calls back (rtmidi)
FEEDBACK_INTERVAL_S = 0.01  # feedback is coalesced to at most 100 sends per control per second
PAIR_WAIT_S = 0.15  # learn: how long a cc below 32 waits for its low half (cc n+32)
ECHO_S = 0.1  # a message equal to one sent to the device this recently is its echo (USB: a few ms), not a hand


class MidiController:
    """Reads a mido input port and acts on the map's MIDI bindings; a context manager.

    Args:
        dispatcher: the `OscDispatcher` (or `OscServer`) whose checks and store the actions go
            through; `/dreamcam/learn` is added to its addresses.
        mapping: the controller map (its MIDI bindings are used; learn adds to it); None: an empty one.
        inport: a mido input port (an rtmidi port from `ports.open_ports`, or any `mido.ports.BaseInput`).
        outport: a mido output port for feedback, or None.
        map_path: the map file learn writes to; None: learned bindings live until dreamcam stops.
        learning: remember the last control moved, so that a target armed next binds it (--learn).
        on_learn: called with one line for a person each time learn binds, fails or is armed.
    """

    def __init__(
        self,
        dispatcher: Any,
        mapping: ControllerMap | None,
        inport: Any,
        outport: Any = None,
        *,
        map_path: str | Path | None = None,
        learning: bool = False,
        on_learn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dispatcher = dispatcher
        self.store = dispatcher.store
        if mapping is None:
            mapping = ControllerMap([], str(map_path or "<learned>"))
        if dispatcher.mapping is not mapping:
            dispatcher.remap(mapping)
        self.inport, self.outport = inport, outport
        self.map_path = Path(map_path).expanduser() if map_path is not None else None
        self.learning = learning
        self._on_learn = on_learn or (lambda line: log.warning("%s", line))
        self._clock = clock
        self.counts: Counter[str] = Counter({k: 0 for k in ("received", "applied", "rejected", "unbound", "ignored", "echo")})
        self.sent = 0  # feedback messages
        self.last_learned: str | None = None
        self._lock = threading.Lock()  # learn state: armed from OSC, console and input threads
        self._armed: dict | None = None
        self._caught: tuple[MidiControl, float] | None = None  # the control being learned, since when
        self._pair: dict[tuple[int, int], int] = {}  # (channel, cc n) -> the high half last received
        self._channels: dict[tuple[str, int], int] = {}  # (kind, number) -> the channel it last came on
        self._origin = threading.local()  # the control whose message is being applied, on this thread
        self._fb = Latest()  # knob -> (value, the control it came from)
        self._last_sent: dict[tuple, int] = {}
        self._echo: dict[tuple[str, int, int], tuple[int, float]] = {}  # what was sent: (value, when)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._callback = False  # set by start() for ports that call back
        dispatcher.add_action(LEARN_ADDRESS, self._learn_message)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> MidiController:
        if self._threads:
            return self
        if self._closed:
            raise RuntimeError("this MidiController was closed; make a new one")
        # rtmidi ports hand each message to a callback on rtmidi's own thread: nothing polls, so
        # an idle controller costs the engine thread no interpreter time; other ports are polled
        self._callback = takes_callback(self.inport)
        if self._callback:
            self.inport.callback = self.handle
        self._threads.append(threading.Thread(target=self._read, name="dreamcam-midi", daemon=True))
        if self.outport is not None:
            self.store.subscribe(self._on_change)
            # the device shows every bound value from the start
            self._fb.put_all({k: (v, None) for k, v in self.store.snapshot().items()})
            self._threads.append(threading.Thread(target=self._push_feedback, name="dreamcam-midi-feedback", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        """Stop the threads and close the ports; safe to call more than once."""
        self._closed = True
        self._stop.set()
        self._fb.wake()
        for t in self._threads:
            t.join(timeout=2.0)
        self._threads.clear()
        if self._callback:
            self.inport.callback = None
        for port in (self.inport, self.outport):
            if port is not None and not getattr(port, "closed", False):
                try:
                    port.close()
                except Exception as e:  # a device unplugged meanwhile
                    log.debug("closing MIDI port %s: %s", getattr(port, "name", port), e)

    def __enter__(self) -> MidiController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def mapping(self) -> ControllerMap:
        """The running map: the dispatcher's, which a re-read file replaces and learn adds to."""
        return self.dispatcher.mapping

    def status(self) -> dict[str, Any]:
        """For /dreamcam/status: {"midi": {input, output, counts, sent, learn, learned}}."""
        with self._lock:
            armed = describe(self._armed) if self._armed is not None else None
        return {"midi": {"input": getattr(self.inport, "name", None), "output": getattr(self.outport, "name", None),
                         **self.counts, "sent": self.sent, "learn": armed, "learned": self.last_learned}}

    # ------------------------------------------------------------------ input

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._callback:
                    for msg in self.inport.iter_pending():
                        self.handle(msg)
                self.tick()
            except Exception:  # a bug or an unplugged device must not end control silently
                log.exception("MIDI input failed")
                self._stop.wait(1.0)
            self._stop.wait(TICK_S if self._callback else POLL_S)

    def handle(self, msg: Any) -> None:
        """Act on one mido message (from rtmidi's callback thread, or the polling thread)."""
        try:
            self._handle(msg)
        except Exception:  # on rtmidi's thread an exception would end in its C++ code
            log.exception("MIDI message %s failed", msg)

    def _handle(self, msg: Any) -> None:
        self.counts["received"] += 1
        got = event(msg)
        if got is None:
            self.counts["ignored"] += 1
            return
        kind, number, channel, value = got
        sent = self._echo.pop(got[:3], None)
        echo = sent is not None and sent[0] == raw(msg) and self._clock() - sent[1] < ECHO_S
        self._channels[(kind, number)] = channel
        if kind == "cc":
            high = number - 32 if 32 <= number < 64 else number
            pair = self.mapping.find_midi("cc14", high, channel)
            if not echo and self._learn_moved(MidiControl("cc", number, channel)):
                return
            if pair is not None:
                if number < 32:
                    self._pair[(channel, number)] = value
                    value = value << 7
                else:
                    value = (self._pair.get((channel, high), 0) << 7) | value
                self._apply(pair, value, MidiControl("cc14", high, channel), echo)
                return
        elif not echo and self._learn_moved(MidiControl(kind, number, channel)):
            return
        binding = self.mapping.find_midi(kind, number, channel)
        if binding is None:
            self.counts["unbound"] += 1
            return
        self._apply(binding, value, MidiControl(kind, number, channel), echo)

    def _apply(self, binding: Binding, value: int, control: MidiControl, echo: bool = False) -> None:
        """Act on a control's value; a device's `echo` of what it was sent only where acting is
        the same as doing nothing (a momentary switch): a toggle would flip back, a knob re-round."""
        if echo and not (binding.param is not None and PARAMS[binding.param].kind is bool and binding.mode == "momentary"):
            self.counts["echo"] += 1
            return
        try:
            action = binding.translate(value)
        except Rejected as r:
            self.counts["rejected"] += 1
            self.dispatcher.count_rejection(r, f"MIDI {control}")
            return
        if action is None:
            return
        self._origin.control = binding.midi if action.kind == "set" else None
        try:
            ok = self.dispatcher.perform(action, f"MIDI {control}")
        finally:
            self._origin.control = None
        self.counts["applied" if ok else "rejected"] += 1

    # ------------------------------------------------------------------ learn

    def arm(self, text: str) -> str:
        """Learn a binding for the target `text` names (see learn.py): the next control moved
        gets it (or the one just moved, while `learning`). Returns the line said; ConfigError for
        an unknown target."""
        target = parse_target(text)
        with self._lock:
            self._armed = target
            if target is None:
                self._caught = None
                return self._say("learn: off")
            caught, self._caught = self._caught, None
            if caught is not None and self.learning:
                return self._bind(caught[0])
        return self._say(f"learn {describe(target)}: move a control on the MIDI device")

    def _learn_message(self, args: list[Any]) -> None:
        """`/dreamcam/learn TARGET` from OSC; Rejected when the target is not one."""
        if len(args) != 1 or not isinstance(args[0], str):
            raise Rejected("bad_args", f"{LEARN_ADDRESS} takes 1 string: a knob name, 'preset NAME', an address or 'off'")
        try:
            self.arm(args[0])
        except ConfigError as e:
            raise Rejected("bad_args", f"{LEARN_ADDRESS}: {e}") from None

    def _learn_moved(self, control: MidiControl) -> bool:
        """Note a moved control for learn; True when learn takes the message (it then drives nothing)."""
        if self._armed is None and not self.learning:
            return False
        now = self._clock()
        with self._lock:
            caught = self._caught
            if caught is not None and caught[0].kind == "cc" and control.kind == "cc" \
                    and control.number == caught[0].number + 32 and control.channel == caught[0].channel:
                self._caught = (MidiControl("cc14", caught[0].number, control.channel), caught[1])
                if self._armed is None:
                    return False  # --learn remembers the pair; the message still drives its binding
                self._bind(self._caught[0])
                return True  # the low half of the pair being learned
            if self._armed is None:
                self._caught = (control, now)
                return False  # --learn remembers the control; it still does what it is bound to
            if caught is not None and caught[0] != control:
                self._bind(caught[0])  # its low half did not come: a plain cc
                return True
            if control.kind == "cc" and control.number < 32:
                self._caught = (control, now) if caught is None else caught  # wait for cc n+32
                return True
            self._bind(control)
            return True

    def tick(self) -> None:
        """Finish learning a cc whose low half did not follow in PAIR_WAIT_S (the input thread calls this)."""
        if self._armed is None:
            return
        with self._lock:
            if self._armed is not None and self._caught is not None and self._clock() - self._caught[1] >= PAIR_WAIT_S:
                self._bind(self._caught[0])

    def _bind(self, control: MidiControl) -> str:
        """Bind `control` to the armed target (the lock held): the running map at once, then the file."""
        target, self._caught = self._armed, None
        try:
            binding = make_binding(control, target)
        except ConfigError as e:
            return self._say(f"learn {describe(target)}: {e}")
        self._armed = None
        c = binding.midi
        old = self.mapping.midi.get(c.any_channel())
        if c.channel is not None and old is not None and old.midi.kind == c.kind:
            binding = replace(binding, midi=old.midi)  # it was bound for any channel: it stays so
        self.mapping.put(binding)
        self.dispatcher.remap(self.mapping)
        what = f"{binding.control} -> {describe(target)}"
        if self.map_path is None:
            line = f"learned {what} (not saved: start with --map FILE to keep learned bindings)"
        else:
            try:
                save_binding(self.map_path, binding)
                line = f"learned {what} (saved to {self.map_path})"
            except (ConfigError, OSError) as e:
                why = str(e) if isinstance(e, ConfigError) else f"cannot write {self.map_path}: {e.strerror or e}"
                line = f"learned {what}, but did not save it: {why}; the running bindings stay"
        self.last_learned = what
        return self._say(line)

    def _say(self, line: str) -> str:
        self._on_learn(line)
        return line

    # ------------------------------------------------------------------ feedback

    def _on_change(self, name: str, value: Any) -> None:
        if self._closed:
            return
        self._fb.put(name, (value, getattr(self._origin, "control", None)))

    def _push_feedback(self) -> None:
        self._fb.drain(self._stop, FEEDBACK_INTERVAL_S, self._send_feedback)

    def _send_feedback(self, name: str, item: tuple[Any, MidiControl | None]) -> None:
        value, origin = item
        for msg in self.feedback_messages(name, value, skip=origin):
            try:
                self.outport.send(msg)
                self.sent += 1
                self._echo[event(msg)[:3]] = (raw(msg), self._clock())
            except Exception as e:  # an unplugged device: input may still come back
                log.debug("MIDI feedback failed: %s", e)

    def feedback_messages(self, name: str, value: Any, *, skip: MidiControl | None = None) -> list[Any]:
        """The mido messages that show knob `name` = `value` on the device, leaving out the
        control `skip` and values the device was last sent already."""
        out = []
        for b in list(self.mapping.midi.values()):
            v = b.feedback(name, value)
            if v is None:
                continue
            c = b.midi
            channel = (c.channel or self._channels.get(("cc" if c.kind == "cc14" else c.kind, c.number), 1)) - 1
            level = max(0, min(MIDI_MAX[c.kind], round(v)))
            key = (c.kind, c.number, channel)
            if c == skip:  # it shows this value already: it sent it
                self._last_sent[key] = level
                continue
            if self._last_sent.get(key) == level:
                continue
            self._last_sent[key] = level
            out += messages(c, level, channel, on=level >= (b.input[0] + b.input[1]) / 2)
        return out
