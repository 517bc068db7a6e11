"""The UDP sink: MPEG-TS over UDP for an OBS Media Source or any player, re-opened after a network failure."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np

from dreamcam.errors import ConfigError, DeviceError
from dreamcam.frames import Frame
from dreamcam.sinks.base import Framer, Sink
from dreamcam.sinks.encoders import DEFAULT_BITRATE, AvEncoder, open_encoder, pyav, video_codec

log = logging.getLogger(__name__)

TS_PACKET = 1316  # 7 MPEG-TS packets of 188 bytes: one datagram, under any Ethernet MTU
RESEND_FIRST_S = 0.5  # after a failed UDP send, the stream is re-opened after this long, doubling
RESEND_MAX_S = 5.0  # ... up to this
KEYFRAME_S = 1.0  # most seconds between keyframes: a player joining mid-stream waits at most this
# MPEG-TS muxer: no mux delay, each packet out at once, and the length of each video PES written
# (FFmpeg omits it by default): a demuxer then hands a frame on as soon as it has it, instead of
# when the next frame begins (a frame interval later: 33 ms at 30 fps, 0.5 s at 2 fps)
MUX_OPTIONS = {"max_delay": "0", "flush_packets": "1", "omit_video_pes_length": "0"}
# players and OBS hold a few frames (OBS 29: about 5) before they show one: while the engine is
# slower than half the stream's rate, its last picture is sent again every 1/fps seconds, so those
# frames take 1/fps each instead of the engine's frame time (2.3 s in OBS at 2 frames/s)
SLOW_ENGINE_GAP = 2.0  # frame intervals of the stream between two engine frames that make it "slow"
# what an OBS Media Source needs in "FFmpeg Options" to show the stream without a delay: by default
# FFmpeg probes the stream (up to 5 MB) before the first frame, and OBS then plays every frame that
# much late (0.75 s measured at 30 fps); with probesize=32 it starts from the first packets
OBS_FFMPEG_OPTIONS = "probesize=32"


class UdpSink(Sink):
    """MPEG-TS over UDP (H.264, or MPEG-2 video where PyAV lacks libx264), for an OBS Media
    Source or any player: `ffplay -fflags nobuffer udp://127.0.0.1:PORT`.

    Low latency: ultrafast/zerolatency, no B-frames, no mux delay, each packet flushed at once in
    datagrams of 1316 bytes (7 TS packets). A keyframe, with the stream headers, at least every
    second whatever the frame rate, so a player joining mid-stream starts within a second. The
    socket is bound to the address of the interface that reaches `host`, not to all of them.
    When sends fail (no route, the network went away) the stream is re-opened 0.5 s later, then
    every 1, 2, up to 5 s, until it works; players pick it up again at its next keyframe.

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
        self.poll_s = 1.0 / fps  # no engine frame within a tick: _idle may send the last picture again
        self._last: np.ndarray | None = None  # the last picture sent (framed)
        self._t_last = self._gap = 0.0  # when the engine's last frame came, and the gap before it
        self.repeats = 0  # pictures sent again while the engine was slow
        self._enc: AvEncoder | None = None
        self.local_address: str | None = None  # the address the stream is sent from, once open
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
        log.info("in OBS: a Media Source, Local File off, Input %s, Input Format mpegts, FFmpeg Options %s",
                 self.url.partition("?")[0], OBS_FFMPEG_OPTIONS)

    def _connect(self) -> None:
        av = pyav()
        where = f"udp://{self.host}:{self.port}"
        url, self.local_address = self.url, local_address(self.host, self.port)
        if self.local_address:  # asked at each (re-)open: the route may have changed
            url += f"&localaddr={self.local_address}"
        try:
            container = av.open(url, "w", format="mpegts", options=MUX_OPTIONS)
        except (av.FFmpegError, OSError) as e:
            raise DeviceError(f"cannot stream to {where}: {e}; check the host name and port") from e
        codec = {"auto": video_codec(), "h264": "libx264", "mpeg2": "mpeg2video"}[self.codec]
        self._enc = open_encoder(container, codec, self, self.bitrate, where, "check the host name and port",
                                 keyframe_s=KEYFRAME_S)
        # what a failed send raises: PyAV's OSError (no route, refused, no buffer space); on Windows
        # FFmpeg passes most Winsock errors through raw (-WSAECONNRESET when no player listens yet:
        # the ICMP "port unreachable" of an earlier datagram), which PyAV raises as UndefinedError
        self._send_errors = (OSError, av.error.UndefinedError)

    def _send(self, frame: Frame) -> None:
        now = time.perf_counter()
        self._gap = now - self._t_last if self._last is not None else 0.0
        self._t_last, self._last = now, self._framer(frame.image)
        self._encode(self._last, frame.t_capture)

    def _idle(self) -> None:
        # an engine at the stream's rate that stops (a pause, the end of a clip) is not repeated:
        # only one whose frames come more than SLOW_ENGINE_GAP stream frames apart
        if self._last is None or self._enc is None or self._down is not None:
            return
        if min(self._gap, time.perf_counter() - self._t_last) * self.fps < SLOW_ENGINE_GAP:
            return
        try:
            self._encode(self._last, time.perf_counter())
        except Exception as e:  # the engine's next frame meets the same failure and reports it
            log.debug("udp://%s:%d: sending the last picture again failed: %s", self.host, self.port, e)
            return
        self.repeats += 1

    def _encode(self, image: np.ndarray, t_capture: float) -> None:
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
            sent = self._enc.encode(image, t_capture)
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


def local_address(host: str, port: int) -> str | None:
    """The address of the interface the system routes `host` through (connecting a UDP socket
    sends nothing; it only picks the route), or None when there is no route now: the stream then
    binds all addresses, its sends fail, and the re-open asks again."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.connect(addr)
            return probe.getsockname()[0]
    except OSError as e:
        log.debug("no route to udp://%s:%d now (%s): binding all addresses", host, port, e)
        return None
