"""Benchmarks: one timing core shared by the engine, live-loop, StreamDiffusion, OSC and profile benchmarks."""
