"""OSC: the UDP server, message dispatch against the knob table, and controller maps."""
