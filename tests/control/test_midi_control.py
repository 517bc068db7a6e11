"""MIDI controls steering dreamcam end to end: a controller stand-in (a port of mido's own API,
`midi_standin.StandInDevice`: no MIDI device exists on the test machines) feeds mido messages to
a running `MidiController`, and each change is read back from the real `/dreamcam/status` reply
of an `OscServer` over UDP on 127.0.0.1. Every binding kind (cc with range and curve, cc14 pair,
note to preset, toggle and momentary on/off, action address, channel filter), learn (armed
over OSC, written to the map file, loaded back identically) and feedback on the device's output.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from dreamcam.control.maps import ControllerMap
from dreamcam.control.midi.controller import MidiController
from dreamcam.control.osc.server import OscServer
from dreamcam.control.presets import PresetLibrary
from dreamcam.knobs import ParamStore
from midi_standin import StandInDevice, cc, note_off, note_on
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from waiting import poll as wait_for

HOST = "127.0.0.1"

MAP = """\
# a nanoKONTROL-like layout
[[bind]]
cc = 0
param = "strength"
output = [0.2, 0.8]
curve = "exp"

[[bind]]
cc14 = 1                 # high half cc 1, low half cc 33
param = "guidance"
output = [0, 4]

[[bind]]
cc = 16
channel = 2              # only the knob on channel 2
param = "delta"

[[bind]]
note = 36
preset = "ink"

[[bind]]
note = 37
param = "bypass"         # toggle: each press flips it

[[bind]]
cc = 64
param = "bypass"
mode = "momentary"       # a sustain pedal: on while held

[[bind]]
note = 38
action = "/dreamcam/seed"
args = [42]

[[bind]]
address = "/1/fader1"
param = "transition"
"""


def same(a: ControllerMap, b: ControllerMap) -> bool:
    """The same bindings for the same controls (the order of a map's tables is not a binding)."""
    return (a.osc, a.midi) == (b.osc, b.midi)


def msg(address, *args):
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


class Live:
    """An OSC server on a real UDP port, a MIDI controller on the stand-in, and a client socket."""

    def __init__(self, tmp_path, map_text=MAP, *, learning=False, save=True):
        self.map_path = tmp_path / "controller.toml"
        self.map_path.write_text(map_text)
        presets = tmp_path / "presets.toml"
        presets.write_text('[ink]\nprompt = "an ink drawing"\nstrength = 0.3\n')
        self.mapping = ControllerMap.load(self.map_path)
        self.store = ParamStore()
        self.device = StandInDevice("stand-in controller")
        self.said: list[str] = []
        self.midi = None
        self.osc = OscServer(self.store, port=0, mapping=self.mapping, presets=PresetLibrary(presets),
                             status=lambda: self.midi.status() if self.midi else {})
        self.osc.start()
        self.midi = MidiController(self.osc, self.mapping, self.device, self.device,
                                   map_path=self.map_path if save else None, learning=learning,
                                   on_learn=self.said.append).start()
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind((HOST, 0))
        self.client.settimeout(5.0)

    def send(self, address, *args):
        self.client.sendto(msg(address, *args), (HOST, self.osc.port))

    def status(self) -> dict:
        """The /dreamcam/status reply, over UDP."""
        self.send("/dreamcam/status")
        while True:
            reply = OscMessage(self.client.recvfrom(65535)[0])
            if reply.address == "/dreamcam/state":
                return json.loads(reply.params[0])

    def shows(self, **want) -> bool:
        """True once /dreamcam/status shows every value in `want`."""
        def ok():
            s = self.status()
            return all(s[k] == pytest.approx(v) if isinstance(v, float) else s[k] == v for k, v in want.items())
        return wait_for(ok)

    def close(self):
        self.client.close()
        self.midi.close()
        self.osc.close()


@pytest.fixture
def live(tmp_path):
    lv = Live(tmp_path)
    yield lv
    lv.close()


def test_every_binding_kind_changes_the_status_reply(live):
    d = live.device
    d.move(cc(0, 127))  # top of the fader: the top of its output range
    assert live.shows(strength=0.8)
    d.move(cc(0, 64))  # half way on the exp curve: 0.2 + 0.6 * (64/127)^2
    assert live.shows(strength=0.2 + 0.6 * (64 / 127) ** 2)
    d.move(cc(1, 96), cc(33, 0))  # a 14-bit pair: 96 * 128 of 16383
    assert live.shows(guidance=4 * 96 * 128 / 16383)
    d.move(cc(33, 127))  # the low half alone refines it
    assert live.shows(guidance=4 * (96 * 128 + 127) / 16383)
    d.move(cc(16, 127, channel=1))  # the knob on channel 1 is not the bound one
    d.move(cc(16, 127, channel=2))
    assert live.shows(delta=5.0)
    assert live.midi.counts["unbound"] == 1
    d.move(note_on(36), note_off(36))  # a pad applies a preset
    assert live.shows(preset="ink", prompt="an ink drawing", strength=0.3)
    d.move(note_on(37), note_off(37))  # toggle: press flips, release keeps
    assert live.shows(bypass=True)
    d.move(note_on(37), note_off(37))
    assert live.shows(bypass=False)
    d.move(cc(64, 127))  # momentary: on while held
    assert live.shows(bypass=True)
    d.move(cc(64, 0))
    assert live.shows(bypass=False)
    d.move(note_on(38))  # an action address with its arguments
    assert live.shows(seed=42)
    s = live.status()
    assert s["midi"]["input"] == "stand-in controller" and s["midi"]["applied"] >= 12
    assert s["midi"]["rejected"] == 0


def test_feedback_goes_out_on_change_without_echo(live):
    d = live.device
    assert wait_for(lambda: d.last_cc(0) is not None)  # at start: every bound value
    live.send("/dreamcam/strength", 0.8)  # from OSC: the fader follows (top of its range)
    assert wait_for(lambda: d.last_cc(0) == 127)
    live.store.set("guidance", 2.0)  # from anywhere else (OBS, presets): both halves of the pair
    assert wait_for(lambda: (d.last_cc(1), d.last_cc(33)) == (round(16383 / 2) >> 7, round(16383 / 2) & 127))
    live.store.set("bypass", True)  # the toggle pad lights, the pedal's cc goes up
    assert wait_for(lambda: d.last_note(37) == "on" and d.last_cc(64) == 127)
    live.send("/1/fader1", 0.5)  # an OSC binding of the same map: transition is not on the device
    assert live.shows(transition=30.0)
    sent = len(d.sent_copy())
    d.move(cc(0, 30))  # the hand on the fader: strength changes, nothing is sent back to it
    assert live.shows(strength=0.2 + 0.6 * (30 / 127) ** 2)
    time.sleep(0.2)
    assert [m for m in d.sent_copy()[sent:] if m.type == "control_change" and m.control == 0] == []
    d.move(note_on(37))  # a toggle pad does get its new state back: its light
    assert wait_for(lambda: d.last_note(37) == "off")
    live.send("/dreamcam/strength", 0.2 + 0.6 * (30 / 127) ** 2)  # the value it has: nothing to send
    live.send("/dreamcam/preset", "ink")  # the preset pad lights; 0.3 on the exp curve: the fader moves
    assert wait_for(lambda: d.last_note(36) == "on")
    assert wait_for(lambda: d.last_cc(0) == round(127 * ((0.3 - 0.2) / 0.6) ** 0.5))


class EchoingDevice(StandInDevice):
    """A controller that echoes every message it receives back to dreamcam, as some do."""

    def _send(self, msg):
        super()._send(msg)
        self.move(msg)


def test_a_device_that_echoes_what_it_receives_does_not_loop(tmp_path):
    lv = Live(tmp_path)
    lv.midi.close()
    lv.device = EchoingDevice("echoing controller")
    lv.midi = MidiController(lv.osc, lv.mapping, lv.device, lv.device).start()
    try:
        assert wait_for(lambda: lv.midi.counts["echo"] >= 5)  # the start-up values came back
        lv.device.move(note_on(37), note_off(37))  # one press: bypass on, its light on, echoed
        assert wait_for(lambda: lv.device.last_note(37) == "on")
        assert lv.shows(bypass=True)
        time.sleep(0.3)
        assert lv.status()["bypass"] is True  # the echoed note-on did not flip it back
        lv.send("/dreamcam/strength", 0.5)  # from OSC: the fader's echo does not re-round it
        assert wait_for(lambda: lv.device.last_cc(0) == round(127 * ((0.5 - 0.2) / 0.6) ** 0.5))
        time.sleep(0.3)
        assert lv.status()["strength"] == 0.5
    finally:
        lv.close()


def test_learn_armed_over_osc_writes_the_map_and_it_loads_back(live):
    live.send("/dreamcam/learn", "transition")
    assert live.shows(midi={**live.status()["midi"], "learn": "transition"})
    live.device.move(cc(20, 64, channel=3))  # a control not bound yet: it is learned, not applied
    assert wait_for(lambda: live.midi.last_learned == "cc 20 on channel 3 -> transition")
    text = live.map_path.read_text()
    assert text.startswith(MAP)  # comments and the other bindings stay as they were
    assert text.endswith('\n[[bind]]\ncc = 20\nchannel = 3\nparam = "transition"\n')
    assert same(ControllerMap.load(live.map_path), live.mapping)  # the file says what runs
    live.device.move(cc(20, 127, channel=3))
    assert live.shows(transition=60.0)
    # re-learning a bound control replaces its table in place
    live.send("/dreamcam/learn", "/dreamcam/preset ink")
    assert wait_for(lambda: live.status()["midi"]["learn"] == "/dreamcam/preset ink")
    live.device.move(note_on(37))
    # bound for any channel before: it stays so
    assert wait_for(lambda: live.midi.last_learned == "note 37 -> /dreamcam/preset ink")
    text = live.map_path.read_text()
    assert '[[bind]]\nnote = 37\naction = "/dreamcam/preset"\nargs = ["ink"]\n\n[[bind]]\ncc = 64' in text
    assert text.count("note = 37") == 1 and "# toggle: each press flips it" not in text
    assert same(ControllerMap.load(live.map_path), live.mapping)
    assert any("saved to" in line for line in live.said)


def test_learn_a_14_bit_pair(live):
    live.send("/dreamcam/learn", "seed")
    assert wait_for(lambda: live.status()["midi"]["learn"] == "seed")
    live.device.move(cc(2, 1), cc(34, 0))  # the high half, then the low half right after
    assert wait_for(lambda: live.midi.last_learned == "cc14 2 on channel 1 -> seed")
    live.device.move(cc(2, 127), cc(34, 127))
    assert live.shows(seed=2**31 - 1)
    assert "cc14 = 2\nchannel = 1\nparam = \"seed\"\n" in live.map_path.read_text()


def test_learn_refuses_what_a_control_cannot_drive_and_bad_targets(live):
    live.send("/dreamcam/learn", "strength")
    assert wait_for(lambda: live.status()["midi"]["learn"] == "strength")
    live.device.move(note_on(50))  # a pad for a knob with a range: said, and learn waits on
    assert wait_for(lambda: any("note 50 on channel 1 is a key or pad" in line for line in live.said))
    assert live.status()["midi"]["learn"] == "strength"
    live.send("/dreamcam/learn", "volume")
    assert wait_for(lambda: live.status()["rejected"]["bad_args"] == 1)
    live.send("/dreamcam/learn", "off")
    assert wait_for(lambda: live.status()["midi"]["learn"] is None)


def test_a_broken_map_file_is_not_overwritten_and_the_running_bindings_stay(live):
    broken = live.map_path.read_text() + "\n[[bind]]\ncc = 200\nparam = \"strength\"\n"
    live.map_path.write_text(broken)  # an edit in progress
    live.send("/dreamcam/learn", "delta")
    assert wait_for(lambda: live.status()["midi"]["learn"] == "delta")
    live.device.move(cc(21, 127))
    assert wait_for(lambda: live.midi.last_learned == "cc 21 on channel 1 -> delta")
    line = next(s for s in live.said if "did not save" in s)
    assert "line 41: cc must be a whole number 0..127, got 200" in line and "the running bindings stay" in line
    assert live.map_path.read_text() == broken  # untouched
    live.device.move(cc(0, 127), cc(21, 0))  # the old bindings and the learned one both work
    assert live.shows(strength=0.8, delta=0.0)


def test_move_then_choose_with_learning_on(tmp_path):
    lv = Live(tmp_path, learning=True)
    try:
        lv.device.move(cc(0, 127))  # a bound fader still works while learning
        assert lv.shows(strength=0.8)
        lv.device.move(cc(70, 5))
        assert wait_for(lambda: lv.midi.counts["received"] == 2)
        lv.midi.arm("guidance")  # the console (--learn) or /dreamcam/learn names it after
        assert lv.midi.last_learned == "cc 70 on channel 1 -> guidance"
        assert ControllerMap.load(lv.map_path).find_midi("cc", 70, 1).param == "guidance"
    finally:
        lv.close()


def test_out_of_range_midi_values_are_rejected_and_counted(tmp_path):
    lv = Live(tmp_path, '[[bind]]\ncc = 5\nparam = "strength"\ninput = [0, 100]\n')
    try:
        lv.device.move(cc(5, 120))
        assert wait_for(lambda: lv.status()["rejected"]["out_of_range"] == 1)
        assert lv.status()["strength"] == 0.4
    finally:
        lv.close()


def test_an_edited_map_file_applies_while_running_and_a_broken_edit_is_refused(live, caplog):
    import logging

    from dreamcam.control.map_file import MapReloader

    with MapReloader(live.map_path, live.osc.replace_map) as reloader, \
            caplog.at_level(logging.WARNING, logger="dreamcam.control.map_file"):
        live.map_path.write_text(MAP.replace('cc = 16\nchannel = 2', 'cc = 17\nchannel = 2'))  # the user edits it
        assert wait_for(lambda: reloader.reloads == 1)
        live.device.move(cc(17, 127, channel=2))  # the new control drives delta, over MIDI and OSC alike
        assert live.shows(delta=5.0)
        assert live.midi.mapping.find_midi("cc", 16, 2) is None
        live.map_path.write_text(MAP + '\n[[bind]]\nnote = 60\nparam = "guidance"\n')  # a mistake
        assert wait_for(lambda: reloader.refused == 1)
        assert "line 42 (note 60): guidance takes a range" in caplog.text and "the running bindings stay" in caplog.text
        live.device.move(cc(17, 0, channel=2))  # what ran before the mistake still runs
        assert live.shows(delta=0.0)
        live.map_path.write_text(MAP + '\n[[bind]]\nnote = 60\npreset = "nowhere"\n')  # fine: a warning only
        assert wait_for(lambda: reloader.reloads == 2)
        live.send("/dreamcam/learn", "seed")  # learn goes on adding to the map that runs now
        assert wait_for(lambda: live.status()["midi"]["learn"] == "seed")
        live.device.move(cc(90, 127))
        assert wait_for(lambda: live.midi.last_learned == "cc 90 on channel 1 -> seed")
        assert wait_for(lambda: reloader.reloads == 3)  # its own save is read back: the same map
        assert same(ControllerMap.load(live.map_path), live.midi.mapping)
