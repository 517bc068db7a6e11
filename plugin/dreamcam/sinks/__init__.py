"""Outputs. Each sink runs in its own named thread fed through a newest-only hand-over.

`open_sink(spec, ...)` (`specs`) parses a `--sink` value. Every sink (`base.Sink`):

- `start()` opens the output (errors at open are DreamcamError: ConfigError / DeviceError);
- `write(frame)` never blocks (a lock and a deque append): the frame replaces any the sink has
  not taken yet (counted in `dropped`); the recorder keeps a buffer instead, so a recording
  has every frame unless the encoder falls seconds behind;
- live outputs (virtual camera, UDP) send at most `fps` frames per second: a frame that comes
  before the next 1/fps tick waits in the slot (a newer one replaces it, counted in `dropped`),
  a frame that comes later is sent at once, so pacing adds no latency when the engine is the
  slow part (a virtual camera's reader takes the newest frame at its own rate; sending faster
  only costs CPU);
- `written`, `dropped`, `latencies_ms` (capture-to-written, as far as the process can see),
  `error` (the first failure; the sink keeps trying with later frames);
- `close()` lets the thread send what is buffered and release the output, waiting at most
  `close_wait_s`; the thread, not `close()`, releases, so a send still blocked past the wait
  keeps its output until it returns. Idempotent; a failure while releasing also goes to
  `error`, never raised, so the other outputs still close. Sinks are context managers.

Sinks keep a reference to `frame.image` until it is sent: the writer must not reuse it.

Modules: `base` (the contract, `Framer`, the null sink, size and bitrate parsing), one per kind
(`virtualcam`, `udp`, `file`, `preview`), `encoders` (the PyAV encoder udp and file share),
`specs` (the `--sink` parser).
"""

from dreamcam.sinks.base import Framer, NullSink, Sink, parse_bitrate, parse_size
from dreamcam.sinks.file import FileSink
from dreamcam.sinks.preview import PreviewSink
from dreamcam.sinks.specs import open_sink
from dreamcam.sinks.udp import UdpSink
from dreamcam.sinks.virtualcam import VirtualCamSink

__all__ = ["FileSink", "Framer", "NullSink", "PreviewSink", "Sink", "UdpSink", "VirtualCamSink", "open_sink",
           "parse_bitrate", "parse_size"]
