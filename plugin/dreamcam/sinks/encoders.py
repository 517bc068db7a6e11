"""Encoded outputs through PyAV: the MPEG-TS UDP stream and the recorder (see `dreamcam.sinks.devices`)."""

from __future__ import annotations

import logging
import os
import time
from fractions import Fraction

import cv2
import numpy as np

from dreamcam.errors import ConfigError, DeviceError
from dreamcam.frames import Frame
from dreamcam.sinks.devices import Framer, Sink

log = logging.getLogger(__name__)

DEFAULT_BITRATE = 4_000_000  # bits/s for the UDP stream: plenty for 512x512 to 1280x720 at 30 fps
TS_PACKET = 1316  # 7 MPEG-TS packets of 188 bytes: one datagram, under any Ethernet MTU
RECORD_BUFFER_BYTES = 256 << 20  # the recorder's buffer of frames waiting for the encoder
RESEND_FIRST_S = 0.5  # after a failed UDP send, the stream is re-opened after this long, doubling
RESEND_MAX_S = 5.0  # ... up to this
MPEG2_RATES = [Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(50),
               Fraction(60000, 1001), Fraction(60)]


def video_codec() -> str:
    """The encoder PyAV offers here: "libx264" (H.264) if present, else "mpeg2video"."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg2video"


class _AvEncoder:
    """One PyAV video stream in a container: RGB frames in, packets muxed at once.

    Timestamps come from the frames' capture times, so a player or a recording keeps real-time
    pacing whatever rate the engine reaches: H.264 on a 90 kHz clock (variable frame rate);
    MPEG-2 only knows a constant rate, so there each frame takes the next 1/fps tick at or
    after its capture time.
    """

    def __init__(self, container, codec: str, width: int, height: int, fps: float, bitrate: int | None) -> None:
        import av

        self._av, self.container = av, container
        gop = str(max(1, round(fps)))  # a keyframe a second: a player joining mid-stream starts fast
        if codec == "libx264":
            opts = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0", "g": gop}
            if bitrate:  # capped average rate with a one-second buffer
                opts.update({"maxrate": str(bitrate), "bufsize": str(bitrate)})
            else:
                opts["crf"] = "20"
        else:
            opts = {"bf": "0", "g": gop}
        rate = Fraction(fps).limit_denominator(1001)
        if codec != "libx264" and fps <= 60:  # MPEG-2 takes few rates: tick at the first one >= fps
            rate = next(r for r in MPEG2_RATES if r >= rate * Fraction(999, 1000))
        self.time_base = Fraction(1, 90000) if codec == "libx264" else 1 / rate
        self.stream = container.add_stream(codec, rate=rate, options=opts)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.codec_context.time_base = self.time_base
        if bitrate or codec != "libx264":
            self.stream.bit_rate = bitrate or DEFAULT_BITRATE
        self.stream.codec_context.open()  # a setting the encoder refuses fails here, at start
        self.codec = codec
        self._t0: float | None = None
        self._last_pts = -1

    def encode(self, image: np.ndarray, t_capture: float) -> int:
        """Encode one frame and mux what the encoder gives back; returns the packets muxed (0
        while the encoder holds the frame: MPEG-2 gives each frame out one frame later)."""
        if self._t0 is None:
            self._t0 = t_capture
        pts = max(round((t_capture - self._t0) / self.time_base), self._last_pts + 1)
        self._last_pts = pts
        frame = self._av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        packets = self.stream.encode(frame)
        for packet in packets:
            self.container.mux(packet)
        return len(packets)

    def close(self) -> None:
        container, self.container = self.container, None
        if container is None:
            return
        try:
            for packet in self.stream.encode(None):
                container.mux(packet)
        finally:
            container.close()


def _open_encoder(container, codec: str, sink: Sink, bitrate: int | None, where: str, fix: str) -> _AvEncoder:
    """The encoder on `container`, with the output opened and its header written: PyAV opens a
    file or UDP URL only then, so an unwritable folder, a full disk or an unknown host fail here,
    at start, not at the first frame (where a failed header also leaves PyAV unsafe to call again)."""
    import av

    try:
        enc = _AvEncoder(container, codec, sink.width, sink.height, sink.fps, bitrate)
    except (av.FFmpegError, ValueError) as e:
        container.close()
        raise DeviceError(f"{where}: the {codec} encoder refused {sink.width}x{sink.height} at {sink.fps:g} fps: {e}") from e
    try:
        container.start_encoding()
    except (av.FFmpegError, OSError) as e:
        container.close()
        raise DeviceError(f"cannot write to {where}: {e}; {fix}") from e
    return enc


class _WholeWrites:
    """An unbuffered file as PyAV's output: each write writes all its bytes or raises (one raw
    write may write fewer, which FFmpeg would take as done); seekable as the file is (a pipe is
    not: then MP4 refuses at start, as with FFmpeg's own file output)."""

    def __init__(self, raw) -> None:
        self.raw, self.name = raw, raw.name

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[self.raw.write(view):]
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def seekable(self) -> bool:
        return self.raw.seekable()


class UdpSink(Sink):
    """MPEG-TS over UDP (H.264, or MPEG-2 video where PyAV lacks libx264), for an OBS Media
    Source or any player: `ffplay -fflags nobuffer udp://127.0.0.1:PORT`.

    Low latency: ultrafast/zerolatency, no B-frames, a keyframe every second, no mux delay, each
    packet flushed at once in datagrams of 1316 bytes (7 TS packets). When sends fail (no route,
    the network went away) the stream is re-opened 0.5 s later, then every 1, 2, up to 5 s, until
    it works; players pick it up again at its next keyframe.

    Args:
        host, port: where the datagrams go (unicast or multicast).
        width, height: stream size in pixels (even numbers); the engine image is framed to it.
        fps: most frames per second sent; bitrate: bits/s (default 4 Mbit/s).
        codec: auto (H.264 if PyAV has libx264, else MPEG-2), h264 or mpeg2.
    """

    kind = "udp"
    recovers = True
    paced = True

    def __init__(self, host: str, port: int, width: int, height: int, fps: float = 30.0, *,
                 bitrate: int | None = None, codec: str = "auto", fit_mode: str = "letterbox") -> None:
        if codec not in ("auto", "h264", "mpeg2"):
            raise ConfigError(f"udp sink codec must be auto, h264 or mpeg2; got {codec!r}")
        super().__init__(width, height, fps)
        self.host, self.port, self.bitrate, self.codec = host, port, bitrate or DEFAULT_BITRATE, codec
        self._framer = Framer(width, height, fit_mode)
        self._enc: _AvEncoder | None = None
        self._down: BaseException | None = None  # the failed send, while the stream is down
        self._retry_in = RESEND_FIRST_S / 2  # doubled before each wait
        self._retry_at = 0.0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp://{host}:{self.port}?pkt_size={TS_PACKET}"

    def _open(self) -> None:
        self._connect()
        log.info("streaming MPEG-TS (%s, %d kbit/s) to udp://%s:%d", self._enc.codec, self.bitrate // 1000, self.host, self.port)

    def _connect(self) -> None:
        import av

        where = f"udp://{self.host}:{self.port}"
        try:
            container = av.open(self.url, "w", format="mpegts", options={"max_delay": "0", "flush_packets": "1"})
        except (av.FFmpegError, OSError) as e:
            raise DeviceError(f"cannot stream to {where}: {e}; check the host name and port") from e
        codec = {"auto": video_codec(), "h264": "libx264", "mpeg2": "mpeg2video"}[self.codec]
        self._enc = _open_encoder(container, codec, self, self.bitrate, where, "check the host name and port")
        # what a failed send raises: PyAV's OSError (no route, refused, no buffer space); on Windows
        # FFmpeg passes most Winsock errors through raw (-WSAECONNRESET when no player listens yet:
        # the ICMP "port unreachable" of an earlier datagram), which PyAV raises as UndefinedError
        self._send_errors = (OSError, av.error.UndefinedError)

    def _send(self, frame: Frame) -> None:
        # FFmpeg's output stays failed after one failed send (its error is sticky), so a network
        # blip would end the stream for good: drop the broken output and open a new one (a new
        # stream, starting with a keyframe) RESEND_FIRST_S later, doubling up to RESEND_MAX_S
        if self._enc is None:
            if time.monotonic() < self._retry_at:
                raise DeviceError(f"udp://{self.host}:{self.port} is down ({self._down}); re-opening it")
            try:
                self._connect()
            except DeviceError:
                self._retry_later()
                raise
        try:
            sent = self._enc.encode(self._framer(frame.image), frame.t_capture)
        except self._send_errors as e:  # the base logs it once and counts the outage
            self._down = e
            self._retry_later()
            enc, self._enc = self._enc, None
            try:
                enc.close()
            except Exception as close_error:  # the output is broken: flushing it fails too
                log.debug("udp://%s:%d: close after a failed send: %s", self.host, self.port, close_error)
            raise
        if self._down is not None:
            if not sent:  # a re-opened output is back once a send worked, not when the encoder took a frame
                raise DeviceError(f"udp://{self.host}:{self.port} is down ({self._down}); re-opening it")
            self._down, self._retry_in = None, RESEND_FIRST_S / 2

    def _retry_later(self) -> None:
        self._retry_in = min(self._retry_in * 2, RESEND_MAX_S)
        self._retry_at = time.monotonic() + self._retry_in

    def _release(self) -> None:
        enc, self._enc = self._enc, None
        if enc is not None:
            enc.close()


class FileSink(Sink):
    """Records every frame to a video file at the output size.

    H.264 (libx264, CRF 20 or `bitrate`) through PyAV with capture-time timestamps, so the
    file lasts as long as the run did; `codec="mp4v"` (or no libx264 in PyAV) falls back to
    OpenCV's MPEG-4 Part 2 at a constant `fps` (duration = frames / fps).
    """

    kind = "file"

    def __init__(self, path: str, width: int, height: int, fps: float = 30.0, *,
                 bitrate: int | None = None, codec: str = "auto", fit_mode: str = "letterbox") -> None:
        if codec not in ("auto", "h264", "mp4v"):
            raise ConfigError(f"file sink codec must be auto, h264 or mp4v; got {codec!r}")
        self.depth = max(16, min(600, RECORD_BUFFER_BYTES // (width * height * 3)))
        super().__init__(width, height, fps)
        self.path, self.bitrate, self.codec = path, bitrate, codec
        self._framer = Framer(width, height, fit_mode)
        self._enc: _AvEncoder | None = None
        self._file = None  # the recording's file (PyAV writes through it)
        self._writer: cv2.VideoWriter | None = None
        self._warned_drop = False

    def _open(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise DeviceError(f"cannot record to {self.path}: folder {folder} does not exist")
        if self.codec != "mp4v" and video_codec() == "libx264":
            import av

            try:
                container = av.open(self.path, "w")  # the format, from the name; this opens no file yet
            except (av.FFmpegError, OSError, ValueError) as e:
                raise DeviceError(f"cannot record to {self.path}: {e}; use a .mp4, .mkv or .mov name in a writable folder") from e
            format_name = container.format.name
            container.close()
            # the file is ours, so a failed start closes it: PyAV keeps the descriptor of an output
            # whose header failed (a full disk) open for good. Unbuffered, so the header's write
            # fails here, at start.
            fix = "choose a writable folder with free space"
            try:
                self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed by _release
            except OSError as e:
                raise DeviceError(f"cannot write to {self.path}: {e.strerror or e}; {fix}") from e
            try:
                container = av.open(_WholeWrites(self._file), "w", format=format_name)
                self._enc = _open_encoder(container, "libx264", self, self.bitrate, self.path, fix)
            except BaseException:
                self._file.close()
                self._file = None
                raise
            return
        if self.codec == "h264":
            raise DeviceError("file sink codec h264: this PyAV has no libx264 encoder; use codec=mp4v or a PyAV wheel with libx264")
        writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), float(self.fps), (self.width, self.height))
        if not writer.isOpened():
            raise DeviceError(f"cannot record to {self.path}: OpenCV could not open an mp4 writer there")
        self._writer = writer

    def write(self, frame: Frame) -> None:
        super().write(frame)
        if self.dropped and not self._warned_drop:
            self._warned_drop = True
            log.warning("recorder %s is %d frames behind: dropping the oldest (count in dropped)", self.path, self.depth)

    def _send(self, frame: Frame) -> None:
        img = self._framer(frame.image)
        if self._enc is not None:
            self._enc.encode(img, frame.t_capture)
        else:
            self._writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    def _release(self) -> None:
        try:
            if self._enc is not None:
                self._enc.close()
                self._enc = None
        finally:
            file, self._file = self._file, None
            if file is not None:
                file.close()
        if self._writer is not None:
            self._writer.release()
            self._writer = None
