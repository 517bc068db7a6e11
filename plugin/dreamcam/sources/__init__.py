"""Capture sources. Each runs in its own named thread and exposes only its newest frame.

`open_source(spec, ...)` (`specs`) parses a `--source` value. Every source (`base.Source`):

- `start()` opens the device and starts the capture thread (errors at open are DreamcamError:
  one line that says what is wrong and how to fix it); `check()` says the same before a slow
  model load, without keeping the device;
- `read(timeout)` returns the newest `Frame` not yet read, or None when none came in time;
- `dropped`: frames captured but never read (the consumer was slower);
- `fps`: measured capture rate; `close()` is idempotent; the source is a context manager;
- `signal_lost`: the device stopped giving frames (read failures, device gone, or no frame for
  `STALL_S`); the thread then re-opens it with back-off (`RETRY_FIRST_S` doubling up to
  `RETRY_MAX_S`) and resumes by itself; `reconnects` counts the recoveries. A lost device never
  raises out of the thread: the runner keeps its output alive meanwhile.

Modules: `base` (the contract and shared OpenCV helpers), one per kind (`webcam`, `screen`,
`file`, `image`, `testpattern`), `specs` (the `--source` parser).
"""

from dreamcam.sources.base import SignalLost, Source
from dreamcam.sources.file import VideoFileSource
from dreamcam.sources.image import ImageSource
from dreamcam.sources.screen import ScreenSource
from dreamcam.sources.specs import open_source
from dreamcam.sources.testpattern import TestPatternSource
from dreamcam.sources.webcam import WebcamSource

__all__ = ["ImageSource", "ScreenSource", "SignalLost", "Source", "TestPatternSource", "VideoFileSource",
           "WebcamSource", "open_source"]
