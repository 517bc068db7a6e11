"""tools/gpu_sweep.py, the driver of the one device call per GPU session, on the CPU (SMOKE: tiny
model, eager): rows run side by side, but their timed stretches never overlap, and every other row
is paused while one times. Also the bench's side of the hand-shake (dreamcam.bench.gate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dreamcam.bench.gate import TimingGate
from dreamcam.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_gate_waits_for_go_and_says_done(tmp_path):
    gate = TimingGate(str(tmp_path / "row"), poll_s=0.01)
    threading.Timer(0.3, lambda: (tmp_path / "row.go1").write_text("")).start()
    t0 = time.perf_counter()
    with gate.timing():
        assert (tmp_path / "row.ready1").exists() and not (tmp_path / "row.done1").exists()
        waited = time.perf_counter() - t0
    assert waited >= 0.25 and gate.waited_s >= 0.25 and (tmp_path / "row.done1").exists()
    (tmp_path / "row.go2").write_text("")  # the second stretch has its own files
    with gate.timing():
        pass
    assert (tmp_path / "row.done2").exists() and gate.count == 2


def test_no_gate_is_a_no_op_and_a_missing_folder_is_named(tmp_path):
    with TimingGate(None).timing():
        pass
    with pytest.raises(ConfigError, match="does not exist"):
        TimingGate(str(tmp_path / "nope" / "row"))


def test_a_gate_with_no_driver_says_what_it_waits_for_and_gives_up_in_one_line(tmp_path, caplog):
    gate = TimingGate(str(tmp_path / "row"), poll_s=0.01, max_wait_s=0.2)
    with caplog.at_level("INFO", logger="dreamcam.bench.gate"), pytest.raises(
            ConfigError, match=r"^--timing-gate: no row.go1 after 0 s; the flag is for tools/gpu_sweep.py, which "
                               r"writes it: run the bench without --timing-gate$"):
        with gate.timing():
            pytest.fail("timed without a go")
    assert "waiting for" in caplog.text and "row.go1" in caplog.text
    assert not (tmp_path / "row.done1").exists()


def test_sweep_rows_compile_side_by_side_and_time_one_at_a_time(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "plugin"), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(ROOT / "tools" / "gpu_sweep.py"), "--smoke", "--rows", "base,fb2,w768", "--jobs", "3",
           "--frames", "4", "--budget", "240", "--out", str(out), "--caches", str(tmp_path / "caches")]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["row"]: r for r in json.loads((out / "sweep.json").read_text())["rows"]}
    assert [rows[n]["status"] for n in ("base", "fb2", "w768")] == ["ok"] * 3, rows
    assert rows["fb2"]["frame_buffer"] == 2 and rows["base"]["peer_fps"] > 0 and rows["base"]["loop_fps"] > 0
    # each row's timed stretch ran from its go to its done; no two of them overlap
    gates = out / "gates"
    spans = []
    for name in rows:
        for go in sorted(gates.glob(f"{name}.go*")):
            n = go.name.rsplit("go", 1)[1]
            spans.append((go.stat().st_mtime, float((gates / f"{name}.done{n}").read_text()), name))
    spans.sort()
    assert len(spans) >= 3
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        assert end <= start + 0.05, f"{a} still timing when {b} started"
    assert sum(r["paused_s"] for r in rows.values()) > 0  # the others stood still meanwhile
    assert "sweep done" in (out / "log.txt").read_text()


def test_a_sweep_killed_midway_leaves_no_row_behind(tmp_path):
    """SIGTERM (the device tool's time limit, a Ctrl-C) ends the driver; rows it had started, and
    paused with SIGSTOP, run in sessions of their own, so they must be killed by the driver itself."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "plugin"), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(ROOT / "tools" / "gpu_sweep.py"), "--smoke", "--rows", "base,fb2", "--jobs", "2",
           "--frames", "4", "--budget", "240", "--out", str(out), "--caches", str(tmp_path / "caches")]
    sweep = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def rows_alive():  # the driver's own command line names `out` too: it is not a row
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and int(proc.name) != sweep.pid and \
                        str(out) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

    deadline = time.monotonic() + 60
    while len(rows_alive()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(rows_alive()) >= 2, "the rows never started"
    sweep.terminate()
    assert sweep.wait(timeout=30) == 143
    # SIGKILL'd rows go within moments (a row left behind would run on for minutes); on a loaded
    # machine the kernel can take longer than a fixed 0.3 s to tear a process down
    deadline = time.monotonic() + 10
    while rows_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rows_alive() == []
    rows = {r["row"]: r["status"] for r in json.loads((out / "sweep.json").read_text())["rows"]}
    assert "killed: the sweep ended" in rows.values(), rows


def test_a_sigterm_as_a_row_starts_waits_until_the_row_is_recorded(tmp_path, monkeypatch):
    """A SIGTERM that lands between a row's Popen and its `running` status used to end the driver
    with that row unrecorded, so the clean-up did not kill it and it ran on (a CI failure of the
    test above). Here the signal lands at that exact point, every time."""
    import argparse

    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import gpu_sweep

    sweep = gpu_sweep.Sweep(argparse.Namespace(out=str(tmp_path), caches=str(tmp_path / "caches"), cwd=str(tmp_path)))
    real_popen = subprocess.Popen

    def popen_then_sigterm(*a, **kw):
        proc = real_popen(*a, **kw)
        sweep.on_sigterm()  # what the SIGTERM handler does, right after the row's process exists
        return proc

    monkeypatch.setattr(gpu_sweep.subprocess, "Popen", popen_then_sigterm)
    job = gpu_sweep.Job("row", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), "")
    try:
        with pytest.raises(SystemExit) as ended:
            sweep.start(job)
        assert ended.value.code == 143
        assert job.status == "running" and job.proc.poll() is None  # recorded: the clean-up will find it
    finally:
        if job.proc is not None:
            sweep.kill(job, "killed: the sweep ended")
    assert job.proc.returncode == -9
