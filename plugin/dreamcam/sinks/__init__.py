"""Sinks: where finished frames go (virtual camera, UDP MPEG-TS for OBS, file, preview, null) and the --sink parser."""
