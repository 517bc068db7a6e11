"""The file sink: records every frame to a video file through PyAV (H.264, or MPEG-4 Part 2)."""

from __future__ import annotations

import contextlib
import logging
import os

from dreamcam.errors import ConfigError, DeviceError
from dreamcam.frames import Frame
from dreamcam.sinks.base import Framer, Sink
from dreamcam.sinks.encoders import AvEncoder, open_encoder, pyav, video_codec

log = logging.getLogger(__name__)

RECORD_BUFFER_BYTES = 256 << 20  # the recorder's buffer of frames waiting for the encoder
FRAGMENT_SECONDS = 1  # a crash (SIGKILL, power loss, a full disk) loses at most about this much
# PyAV's output buffer: larger than one fragment (1 s at 1080p is a few MB), so each fragment
# reaches the file in one write (see _WholeWrites)
OUTPUT_BUFFER_BYTES = 32 << 20

# Muxer options that make a recording crash-safe: everything written so far plays if the process
# dies without writing a trailer. MP4 / MOV / M4V keep their index (moov) at the end, so a killed
# run left no playable frame: fragmented, each fragment carries its own index. Matroska buffers a
# whole cluster (5 s by default) before writing it. Every format flushes each packet to the file.
CRASH_SAFE = {
    "mp4": {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": str(FRAGMENT_SECONDS * 1_000_000)},
    "matroska": {"cluster_time_limit": str(FRAGMENT_SECONDS * 1000)},
}
CRASH_SAFE["mov"] = CRASH_SAFE["ipod"] = CRASH_SAFE["mp4"]
CRASH_SAFE["webm"] = CRASH_SAFE["matroska"]


class _WholeWrites:
    """An unbuffered file as PyAV's output: each write writes all its bytes or raises (one raw
    write may write fewer, which FFmpeg would take as done); seekable as the file is (a pipe is
    not: then MP4 refuses at start, as with FFmpeg's own file output).

    A write that fails (a full disk) is taken back whole: with an output buffer larger than a
    fragment, one write is one whole fragment or cluster, so the file ends on the last whole one
    and plays to its end, instead of ending in half a fragment a decoder stumbles on."""

    def __init__(self, raw) -> None:
        self.raw, self.name = raw, raw.name

    def write(self, data: bytes) -> int:
        start = self.raw.tell()
        view = memoryview(data)
        try:
            while view:
                view = view[self.raw.write(view):]
        except OSError:
            with contextlib.suppress(OSError):
                self.raw.truncate(start)
            raise
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def seekable(self) -> bool:
        return self.raw.seekable()


class FileSink(Sink):
    """Records every frame to a video file at the output size.

    H.264 (libx264, CRF 20 or `bitrate`) through PyAV; `codec="mp4v"` (or no libx264 in PyAV)
    records FFmpeg's MPEG-4 Part 2 (`bitrate`, 4 Mbit/s by default) the same way. Timestamps are
    the capture times, so the file lasts as long as the run did.

    A recording is crash-safe (see CRASH_SAFE): killed outright, it plays up to about its last
    second, whatever the codec. A file this sink created and never wrote a frame to is removed at close.
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
        self._enc: AvEncoder | None = None
        self._file = None  # the recording's file (PyAV writes through it)
        self._warned_drop = False
        self._created = False  # this sink made the file (it was not there before the run)
        self._recorded = 0  # frames handed to the encoder

    def _open(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise DeviceError(f"cannot record to {self.path}: folder {folder} does not exist")
        self._created = not os.path.lexists(self.path)
        encoder = self._encoder()
        av = pyav()
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
            options = {"flush_packets": "1", **CRASH_SAFE.get(format_name, {})}
            container = av.open(_WholeWrites(self._file), "w", format=format_name, options=options,
                                buffer_size=OUTPUT_BUFFER_BYTES)
            self._enc = open_encoder(container, encoder, self, self.bitrate, self.path, fix)
        except BaseException:
            self._file.close()
            self._file = None
            raise

    def _encoder(self) -> str:
        """The FFmpeg encoder for `codec`: H.264 where PyAV has libx264 (auto, h264), else
        FFmpeg's own MPEG-4 Part 2 (mp4v), which every PyAV build has."""
        if self.codec != "mp4v" and video_codec() == "libx264":
            return "libx264"
        if self.codec == "h264":
            raise DeviceError("file sink codec h264: this PyAV has no libx264 encoder; use codec=mp4v or a PyAV wheel with libx264")
        return "mpeg4"

    def write(self, frame: Frame) -> None:
        super().write(frame)
        if self.dropped and not self._warned_drop:
            self._warned_drop = True
            log.warning("recorder %s is %d frames behind: dropping the oldest (count in dropped)", self.path, self.depth)

    def _send(self, frame: Frame) -> None:
        self._enc.encode(self._framer(frame.image), frame.t_capture)
        self._recorded += 1

    def _release(self) -> None:
        try:
            if self._enc is not None:
                self._enc.close()
                self._enc = None
        finally:
            file, self._file = self._file, None
            if file is not None:
                file.close()
            self._remove_if_empty()

    def _remove_if_empty(self) -> None:
        """A file this sink created and never wrote a frame to (stopped during the model load)
        goes again: an empty recording is not a recording. A file that was there before the run
        stays, overwritten as any recording overwrites its path."""
        if self._created and not self._recorded:
            self._created = False
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            log.debug("removed %s: no frame was recorded", self.path)
