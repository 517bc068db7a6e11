"""The live loop: the runner (source -> engine -> sinks, threads, shutdown order), pacing and stats."""
