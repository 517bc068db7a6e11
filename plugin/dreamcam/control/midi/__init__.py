"""MIDI controllers: faders, knobs and pads bound through the controller map (`dreamcam.control.maps`),
learned live, and shown back on the device (motor faders, LED rings, pad lights).

`ports.py` is the thin part that talks to the OS (python-rtmidi through mido: listing, opening a
port by name, substring or index); `controller.py` reads and writes mido messages on any mido
port, so it runs the same on a real device and on a stand-in; `learn.py` turns "this control,
that knob" into a binding.
"""
