"""The PyAV video encoder the UDP stream and the recorder share: RGB frames in, packets muxed
into a container, timestamps from the capture times."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from dreamcam.errors import DeviceError
from dreamcam.sinks.base import Sink

DEFAULT_BITRATE = 4_000_000  # bits/s where no CRF applies (UDP stream, mp4v recording): plenty for 512x512 to 1280x720 at 30 fps
# Each encoder's clock: H.264 on MPEG's 90 kHz; MPEG-4 Part 2 allows at most 65535 ticks a second
# (FFmpeg refuses more), so a millisecond clock; MPEG-2 ticks at its constant frame rate (None)
CLOCKS = {"libx264": 90000, "mpeg4": 1000, "mpeg2video": None}
MPEG2_RATES = [Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(50),
               Fraction(60000, 1001), Fraction(60)]


def pyav():
    """The `av` module, loaded when a stream or a recording first needs it: PyAV loaded before
    OpenCV's first window makes `cv2.imshow` hang on Linux (PyAV issues 978, 1050), so importing
    the sinks must not load it, and a preview alone never does."""
    import av  # lazy: see the docstring

    return av


def video_codec() -> str:
    """The encoder PyAV offers here: "libx264" (H.264) if present, else "mpeg2video"."""
    return "libx264" if "libx264" in pyav().codecs_available else "mpeg2video"


class AvEncoder:
    """One PyAV video stream in a container: RGB frames in, packets muxed at once.

    codec: "libx264" (H.264), "mpeg4" (MPEG-4 Part 2, FourCC mp4v) or "mpeg2video".

    Timestamps come from the frames' capture times, so a player or a recording keeps real-time
    pacing whatever rate the engine reaches: H.264 and MPEG-4 Part 2 on a clock of their own
    (CLOCKS; variable frame rate); MPEG-2 only knows a constant rate, so there each frame takes
    the next 1/fps tick at or after its capture time.

    keyframe_s: at most this many seconds of capture time between keyframes, whatever rate the
    frames come at (None: one keyframe every `fps` frames only). A live stream needs it: a player
    joining mid-stream shows nothing until the next keyframe, and at 2 frames/s 30 frames are 15 s.
    Each keyframe carries the stream headers (H.264 SPS/PPS, MPEG-2 sequence header), and the
    MPEG-TS muxer writes its tables (PAT/PMT) before it, so a keyframe is all a joiner needs.
    """

    def __init__(self, container, codec: str, width: int, height: int, fps: float, bitrate: int | None,
                 *, keyframe_s: float | None = None) -> None:
        self._av, self.container = pyav(), container
        gop = str(max(1, round(fps)))  # a keyframe a second: a player joining mid-stream starts fast
        if keyframe_s is not None:  # keyframes by time (encode()); the encoder's own count only as a backstop
            gop = str(max(1, round(4 * fps * keyframe_s)))
        if codec == "libx264":
            opts = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0", "g": gop}
            if bitrate:  # capped average rate with a one-second buffer
                opts.update({"maxrate": str(bitrate), "bufsize": str(bitrate)})
            else:
                opts["crf"] = "20"
        else:
            opts = {"bf": "0", "g": gop}
        rate = Fraction(fps).limit_denominator(1001)
        clock = CLOCKS[codec]
        if clock is None and fps <= 60:  # MPEG-2 takes few rates: tick at the first one >= fps
            rate = next(r for r in MPEG2_RATES if r >= rate * Fraction(999, 1000))
        self.time_base = Fraction(1, clock) if clock else 1 / rate
        self.stream = container.add_stream(codec, rate=rate, options=opts)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.codec_context.time_base = self.time_base
        if bitrate or codec != "libx264":
            self.stream.bit_rate = bitrate or DEFAULT_BITRATE
        self.stream.codec_context.open()  # a setting the encoder refuses fails here, at start
        self.codec = codec
        self._t0: float | None = None
        self._last_pts = -1
        self._keyframe_s = keyframe_s
        self._next_key = float("-inf")  # capture time by which the next keyframe is due

    def encode(self, image: np.ndarray, t_capture: float) -> int:
        """Encode one frame and mux what the encoder gives back; returns the packets muxed (0
        while the encoder holds the frame: MPEG-2 gives each frame out one frame later)."""
        if self._t0 is None:
            self._t0 = t_capture
        pts = max(round((t_capture - self._t0) / self.time_base), self._last_pts + 1)
        self._last_pts = pts
        frame = self._av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        if self._keyframe_s is not None and t_capture >= self._next_key:
            frame.pict_type = self._av.video.frame.PictureType.I  # libx264: an IDR frame (closed GOP)
            self._next_key = t_capture + self._keyframe_s
        packets = self.stream.encode(frame)
        for packet in packets:
            if packet.is_keyframe and self._keyframe_s is not None and packet.pts is not None:
                # one the encoder chose counts too; timed by its own frame (MPEG-2 gives it a frame late)
                self._next_key = self._t0 + float(packet.pts * self.time_base) + self._keyframe_s
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


def open_encoder(container, codec: str, sink: Sink, bitrate: int | None, where: str, fix: str, *,
                 keyframe_s: float | None = None) -> AvEncoder:
    """The encoder on `container`, with the output opened and its header written: PyAV opens a
    file or UDP URL only then, so an unwritable folder, a full disk or an unknown host fail here,
    at start, not at the first frame (where a failed header also leaves PyAV unsafe to call again).
    keyframe_s: as in `AvEncoder`."""
    av = pyav()
    try:
        enc = AvEncoder(container, codec, sink.width, sink.height, sink.fps, bitrate, keyframe_s=keyframe_s)
    except (av.FFmpegError, ValueError) as e:
        container.close()
        raise DeviceError(f"{where}: the {codec} encoder refused {sink.width}x{sink.height} at {sink.fps:g} fps: {e}") from e
    try:
        container.start_encoding()
    except (av.FFmpegError, OSError) as e:
        container.close()
        raise DeviceError(f"cannot write to {where}: {e}; {fix}") from e
    return enc
