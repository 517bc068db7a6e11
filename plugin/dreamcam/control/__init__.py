"""Live control: the controller that applies knob changes to the engine between frames, presets, and OSC."""
