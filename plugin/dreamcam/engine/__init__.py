"""The stream math: StreamEngine (stream batch, RCFG, LCM schedule), per-prompt state, prompt blending, similarity filter, framing."""
