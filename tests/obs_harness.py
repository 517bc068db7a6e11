"""A real OBS Studio, headless under Xvfb, as a test client (see shared/docs/obs-headless.md).

    with ObsStudio(scripts=[(path, {"prompt": "..."})]) as studio:
        studio.trigger_hotkey("dreamcam.next_preset")
        frame = studio.media_source_screenshot(5600)   # HxWx3 uint8 RGB from udp://127.0.0.1:5600
        assert "Loaded python script" in studio.log_text()

Each instance has its own config folder (global.ini with obs-websocket on a free port, a
profile, a scene collection that loads the given scripts with their settings) under a
temporary directory, waits until obs-websocket answers, and on close SIGTERMs the whole
process group it started (xvfb-run, Xvfb, obs) and removes the folder, in every case.

Tests using it: `pytestmark = OBS_MARKS` (marked `obs`, skipped with the reason when obs,
xvfb-run or obsws-python is missing). Install with tools/install_obs.sh.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import ThreadingOSCUDPServer

try:
    import obsws_python
    from obsws_python.error import OBSSDKError, OBSSDKRequestError
except ImportError:
    obsws_python = None

SCENE = "Scene"
SCREENSHOT_NOT_READY = 702  # obs-websocket: "Failed to render screenshot" before the first frame


def missing_reason() -> str | None:
    """Why a real OBS cannot run here, or None when it can."""
    for exe in ("obs", "xvfb-run"):
        if shutil.which(exe) is None:
            return f"'{exe}' is not installed (run tools/install_obs.sh)"
    if obsws_python is None:
        return "obsws-python is not installed (pip install obsws-python)"
    return None


OBS_MARKS = [pytest.mark.obs, pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 free at the time of asking (TCP by default, SOCK_DGRAM for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ObsError(RuntimeError):
    """OBS did not start, answer or render in time; the message carries the log's tail."""


class ObsStudio:
    """One headless OBS Studio process with its own config; a context manager.

    scripts: (path, settings) pairs the scene collection loads at start-up; settings reach
    each script's `script_update`. width/height: canvas size in pixels. start_timeout_s:
    seconds to wait for obs-websocket.
    """

    def __init__(self, *, scripts=(), width: int = 320, height: int = 240, fps: int = 30,
                 start_timeout_s: float = 30.0):
        self.scripts = [(str(Path(p).resolve()), dict(s)) for p, s in scripts]
        self.width, self.height, self.fps = width, height, fps
        self.start_timeout_s = start_timeout_s
        self.ws_port = free_port()
        self.root: Path | None = None
        self.client = None
        self._proc: subprocess.Popen | None = None
        self._closed = False

    # -- lifetime -----------------------------------------------------------------------
    def __enter__(self) -> ObsStudio:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Write the config, start OBS under xvfb-run, wait until obs-websocket answers."""
        reason = missing_reason()
        if reason:
            raise ObsError(f"cannot start OBS: {reason}")
        self.root = Path(tempfile.mkdtemp(prefix="dreamcam-obs-"))
        self._write_config()
        env = dict(os.environ, HOME=str(self.root), XDG_CONFIG_HOME=str(self.config_dir),
                   XDG_RUNTIME_DIR=str(self.root / "run"), LIBGL_ALWAYS_SOFTWARE="1")
        env.pop("DISPLAY", None)
        # opencv-python (the GUI build) points Qt at its own plugins when cv2 is imported; OBS must use its own
        for key in [k for k in env if k.startswith("QT_")]:
            env.pop(key)
        (self.root / "run").mkdir(mode=0o700)
        with open(self.root / "obs-stdout.txt", "wb") as out:
            self._proc = subprocess.Popen(
                ["xvfb-run", "-a", "-s", "-screen 0 1280x720x24", "obs", "--minimize-to-tray",
                 "--disable-missing-files-check", "--multi"],
                cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # its own process group, so close() reaches Xvfb and obs
        self._wait_for_websocket()

    def close(self) -> None:
        """Disconnect, SIGTERM the process group (SIGKILL after 10 s), delete the folder."""
        if self._closed:
            return
        self._closed = True
        if self.client is not None:
            try:
                self.client.disconnect()
            except Exception:  # noqa: BLE001 - the socket may already be gone with OBS
                pass
            self.client = None
        if self._proc is not None:
            self._end_process_group(self._proc.pid)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def _end_process_group(self, pgid: int) -> None:
        # SIGTERM ends OBS at once (nothing to save); the group also holds xvfb-run and Xvfb,
        # which outlive the leader by a moment. SIGKILL whatever is left after 10 s.
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                self._proc.poll()  # reap the leader
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)

    # -- config -------------------------------------------------------------------------
    @property
    def config_dir(self) -> Path:
        return self.root / ".config"

    def _write_config(self) -> None:
        obs_dir = self.config_dir / "obs-studio"
        (obs_dir / "basic" / "profiles" / "Test").mkdir(parents=True)
        (obs_dir / "basic" / "scenes").mkdir(parents=True)
        (obs_dir / "global.ini").write_text(
            "[General]\nFirstRun=true\nLastVersion=486539266\nEnableAutoUpdates=false\nConfirmOnExit=false\n"
            "[Basic]\nProfile=Test\nProfileDir=Test\nSceneCollection=Test\nSceneCollectionFile=Test\n"
            "ConfigOnNewProfile=false\n"
            f"[OBSWebSocket]\nFirstLoad=false\nServerEnabled=true\nServerPort={self.ws_port}\n"
            "AlertsEnabled=false\nAuthRequired=false\nServerPassword=\n")
        (obs_dir / "basic" / "profiles" / "Test" / "basic.ini").write_text(
            f"[General]\nName=Test\n[Video]\nBaseCX={self.width}\nBaseCY={self.height}\n"
            f"OutputCX={self.width}\nOutputCY={self.height}\nFPSType=0\nFPSCommon={self.fps}\n")
        collection = {
            "name": "Test", "current_scene": SCENE, "current_program_scene": SCENE,
            "scene_order": [{"name": SCENE}],
            "sources": [{"id": "scene", "versioned_id": "scene", "name": SCENE,
                         "settings": {"items": [], "id_counter": 0, "custom_size": False},
                         "flags": 0, "enabled": True, "mixers": 0}],
            "transitions": [], "current_transition": "Fade", "transition_duration": 300,
            "modules": {"scripts-tool": [{"path": p, "settings": s} for p, s in self.scripts]},
        }
        (obs_dir / "basic" / "scenes" / "Test.json").write_text(json.dumps(collection))

    def _wait_for_websocket(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        last_error = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ObsError(f"OBS exited with {self._proc.returncode} before obs-websocket answered;"
                               f" output:\n{self._tail(self.root / 'obs-stdout.txt')}")
            try:
                # A plain TCP probe first: obsws-python logs a traceback for every refused try.
                socket.create_connection(("127.0.0.1", self.ws_port), timeout=1).close()
                self.client = obsws_python.ReqClient(host="127.0.0.1", port=self.ws_port, timeout=5)
                # Failed requests raise OBSSDKRequestError; its traceback logging (every 702
                # retry) only adds noise.
                self.client.logger.setLevel(logging.CRITICAL)
                return
            except (OSError, OBSSDKError) as e:
                last_error = e
                time.sleep(0.2)
        raise ObsError(f"obs-websocket on 127.0.0.1:{self.ws_port} did not answer within "
                       f"{self.start_timeout_s} s ({last_error}); log:\n{self._tail(self.log_path())}")

    # -- log ----------------------------------------------------------------------------
    def log_path(self) -> Path | None:
        logs = sorted((self.config_dir / "obs-studio" / "logs").glob("*.txt"), key=lambda p: p.stat().st_mtime)
        return logs[-1] if logs else None

    def log_text(self) -> str:
        """The current OBS log (script_log output included), '' before it exists."""
        path = self.log_path()
        return path.read_text(errors="replace") if path else ""

    def wait_for_log(self, pattern: str, *, timeout_s: float = 10.0, start: int = 0) -> re.Match:
        """The first match of regex `pattern` in the log after character `start`; ObsError on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            match = re.compile(pattern).search(self.log_text(), start)
            if match:
                return match
            if time.monotonic() > deadline:
                raise ObsError(f"{pattern!r} not in the OBS log within {timeout_s} s; log:\n"
                               f"{self._tail(self.log_path())}")
            time.sleep(0.1)

    @staticmethod
    def _tail(path: Path | None, lines: int = 40) -> str:
        if path is None or not path.exists():
            return "(none)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- requests -----------------------------------------------------------------------
    def hotkey_names(self) -> list[str]:
        return list(self.client.get_hotkey_list().hotkeys)

    def trigger_hotkey(self, name: str) -> None:
        """Run a registered hotkey's callback (TriggerHotkeyByName)."""
        if name not in self.hotkey_names():
            raise ObsError(f"no hotkey named {name!r}; OBS has {self.hotkey_names()}")
        self.client.trigger_hotkey_by_name(name)

    def add_media_source(self, port: int, *, name: str = "dreamcam", host: str = "127.0.0.1") -> str:
        """A Media Source (ffmpeg_source) in the scene reading MPEG-TS from udp://host:port."""
        self.client.create_input(SCENE, name, "ffmpeg_source",
                                 {"is_local_file": False, "input": f"udp://{host}:{port}",
                                  "input_format": "mpegts", "hw_decode": False}, True)
        return name

    def screenshot(self, source: str, *, timeout_s: float = 15.0, until=None) -> np.ndarray:
        """The source's current frame as HxWx3 uint8 RGB (GetSourceScreenshot).

        Retries while OBS answers 702 (nothing rendered yet) and, when `until` is given,
        until `until(image)` is true; ObsError after `timeout_s` seconds.
        """
        import cv2

        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                data = self.client.get_source_screenshot(source, "png", None, None, None).image_data
            except OBSSDKRequestError as e:
                if e.code != SCREENSHOT_NOT_READY:
                    raise
                last = str(e)
            else:
                png = base64.b64decode(data.split(",", 1)[1])
                image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
                if until is None or until(image):
                    return image
                last = f"a {image.shape} frame, mean RGB {image.reshape(-1, 3).mean(0).round(1)}, not accepted"
            time.sleep(0.2)
        raise ObsError(f"no screenshot of {source!r} within {timeout_s} s (last: {last})")

    def media_source_screenshot(self, port: int, *, name: str = "dreamcam", timeout_s: float = 15.0,
                                until=lambda image: image.max() > 16) -> np.ndarray:
        """Show udp://127.0.0.1:port (MPEG-TS) in a Media Source and return a decoded frame.

        By default waits for a frame that is not all black (the source before its first
        decoded frame). The source is created on the first call for `name`.
        """
        inputs = {i["inputName"] for i in self.client.get_input_list().inputs}
        if name not in inputs:
            self.add_media_source(port, name=name)
        return self.screenshot(name, timeout_s=timeout_s, until=until)


class UdpMpegTsSender:
    """Streams one RGB picture as MPEG-2 video in MPEG-TS over UDP, in real time; a context manager.

    image: HxWx3 uint8 RGB (even W and H). Sends to host:port from a named thread until
    close() or `max_s` seconds, one keyframe every 10 frames so a late reader starts fast.
    Stands in for a video source where dreamcam's own UDP sink is not the thing under test.
    """

    def __init__(self, port: int, image: np.ndarray, *, host: str = "127.0.0.1", fps: int = 30,
                 max_s: float = 30.0):
        h, w = image.shape[:2]
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or h % 2 or w % 2:
            raise ValueError(f"image must be HxWx3 uint8 with even H and W, got {image.shape} {image.dtype}")
        self.target, self.image, self.fps, self.max_s = (host, port), image, fps, max_s
        self.datagrams = 0
        self.error: BaseException | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mpegts-udp-{port}", daemon=True)
        self._thread.start()

    def _send(self, data: bytes) -> None:
        for i in range(0, len(data), 1316):  # 7 TS packets: the usual MPEG-TS-over-UDP datagram
            self._sock.sendto(data[i:i + 1316], self.target)
            self.datagrams += 1

    def _run(self) -> None:
        import av

        sender = self

        class _Out:
            def write(self, data):
                sender._send(bytes(data))
                return len(data)

        try:
            container = av.open(_Out(), mode="w", format="mpegts")
            stream = container.add_stream("mpeg2video", rate=self.fps)
            stream.width, stream.height = self.image.shape[1], self.image.shape[0]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = 10
            stream.codec_context.max_b_frames = 0
            start = time.monotonic()
            n = 0
            while not self._stop.is_set() and time.monotonic() - start < self.max_s:
                for packet in stream.encode(av.VideoFrame.from_ndarray(self.image, format="rgb24")):
                    container.mux(packet)
                n += 1
                self._stop.wait(max(0.0, start + n / self.fps - time.monotonic()))
            container.close()
        except BaseException as e:  # noqa: BLE001 - handed to the test through .error
            self.error = e

    def close(self) -> None:
        """Stop the thread (joined within 5 s) and close the socket; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> UdpMpegTsSender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OscPeer:
    """A python-osc ThreadingOSCUDPServer on 127.0.0.1 in dreamcam's place; a context manager.

    Records every message as (address, args) in `received`; answers `/dreamcam/status` to
    the sender with `/dreamcam/state` and `json.dumps(state)` (or the bytes in `reply_raw`).
    With follow=True a received parameter is written into `state`, as dreamcam would.
    Stands in for dreamcam's own OSC server where that is not the thing under test.
    """

    def __init__(self, *, state=None, port: int = 0, follow: bool = True):
        self.state = dict(state or {})
        self.follow = follow
        self.received: list[tuple[str, list]] = []
        self.reply_raw: bytes | None = None
        self._cond = threading.Condition()
        dispatcher = Dispatcher()
        dispatcher.map("/dreamcam/status", self._on_status, needs_reply_address=True)
        dispatcher.set_default_handler(self._on_message)
        self.server = ThreadingOSCUDPServer(("127.0.0.1", port), dispatcher)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"osc-peer-{self.port}", daemon=True)
        self._thread.start()
        self._closed = False

    def _record(self, address, args):
        with self._cond:
            self.received.append((address, list(args)))
            self._cond.notify_all()

    def _on_status(self, client_address, address, *args):
        self._record(address, args)
        reply = self.reply_raw
        if reply is None:
            builder = OscMessageBuilder(address="/dreamcam/state")
            builder.add_arg(json.dumps(self.state))
            reply = builder.build().dgram
        self.server.socket.sendto(reply, client_address)

    def _on_message(self, address, *args):
        self._record(address, args)
        name = address.rsplit("/", 1)[-1]
        if self.follow and address.startswith("/dreamcam/") and len(args) == 1:
            self.state[name] = bool(args[0]) if name == "bypass" else args[0]

    def wait_for(self, address: str, predicate=None, *, timeout_s: float = 5.0) -> list:
        """Args of the first received `address` message whose args pass `predicate`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for got, args in self.received:
                    if got == address and (predicate is None or predicate(args)):
                        return args
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {address} message{' passing the check' if predicate else ''} within "
                                         f"{timeout_s} s; received: {self.received[-20:]}")
                self._cond.wait(left)

    def close(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OscPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
