"""The issue-5 figures and the compiled-backend knobs in ONE device call: rows compile side by side,
and are timed one at a time on an otherwise paused machine.

Each row is one `dreamcam bench` process with its own fresh compile cache (every startup is a cold
first start). Up to --jobs rows (and the GPU-only tests) run at once: their torch.compile runs are
mostly CPU work, which 16 cores share well. Each timed stretch of a row is gated
(`dreamcam.bench.gate`): when a row is ready to time, this driver SIGSTOPs every other process
group, lets the row time, then SIGCONTs the others. So no figure is taken while another row
compiles or tests (the peer is Python-bound, so a compile on the next core would slow it and flatter
the ratio), and the GPU-only tests never overlap a timed stretch. Seconds a row spent paused are
recorded (`paused_s`); its startup figure includes them and the CPU contention of the other
compiles: compare startups between rows of one sweep only.

After each row ends, `sweep.json` is rewritten (the table goes into `log.txt` at the end), so a call
cut short by the device time still brings back every finished row. However the driver ends (an
error, Ctrl-C, SIGTERM), it first kills the rows still running, paused ones included.

    bash .gpurun/tools/gpu_sweep.sh              # on the lent GPU (wheels, PYTHONPATH), results in $OUT
    SMOKE=1 OUT=/tmp/sweep bash tools/gpu_sweep.sh   # on a CPU: tiny shapes, eager, checks the driver
    python tools/gpu_sweep.py --rows base,fb2 --budget 300 --jobs 4 --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))  # the checkout's dreamcam (torch-free part)
from dreamcam.backends.options import KNOB_DEFAULTS  # noqa: E402

from sweep_rows import GPU_TESTS, ROWS, SD15, SMOKE_SD15, SMOKE_TURBO, TURBO, WARM_OF  # noqa: E402

# the compiled backend's flags, dropped from SMOKE rows (eager); the non-bool ones take a value
KNOB_FLAGS = ("--no-cuda-graph", *(f"--{k.replace('_', '-')}" for k in KNOB_DEFAULTS))
KNOB_VALUE_FLAGS = tuple(f"--{k.replace('_', '-')}" for k, v in KNOB_DEFAULTS.items() if not isinstance(v, bool))


@dataclass
class Job:
    name: str
    cmd: list[str]
    env: dict[str, str]
    flags: str
    gated: bool = True  # bench rows hand-shake; the tests are only ever paused
    proc: subprocess.Popen | None = None
    t_start: float = 0.0
    stretches: int = 0
    paused_since: float | None = None
    paused_s: float = 0.0
    status: str = "pending"
    row_s: float = 0.0
    timed_s: float = 0.0

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def pause(self, now: float) -> None:
        if self.paused_since is None:
            self.signal(signal.SIGSTOP)
            self.paused_since = now

    def resume(self, now: float) -> None:
        if self.paused_since is not None:
            self.signal(signal.SIGCONT)
            self.paused_s += now - self.paused_since
            self.paused_since = None

    def active_s(self, now: float) -> float:
        paused = self.paused_s + (now - self.paused_since if self.paused_since is not None else 0.0)
        return now - self.t_start - paused


class Sweep:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.gates = self.out / "gates"
        self.caches = Path(args.caches)
        self.t0 = time.monotonic()
        self.jobs: list[Job] = []
        self.holder: Job | None = None
        self.t_grant = 0.0  # when the holder got its go
        self._held = 0  # > 0 while a SIGTERM must wait (`held`)
        self._term = False  # a SIGTERM came while held
        self.log = open(self.out / "log.txt", "a")  # noqa: SIM115 - open for the sweep's life

    def say(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {msg}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def make_jobs(self) -> None:
        a = self.args
        threads = str(max(2, (os.cpu_count() or 2) * 2 // max(1, a.jobs)))
        self.gates.mkdir(parents=True, exist_ok=True)
        for name in a.rows:
            if name == "gputests":
                # dreamcam from PYTHONPATH (the wheels or this checkout, gpu_env.sh), not pyproject's
                # plugin/; tests/ stays on the path for the shared test helpers
                cmd = [a.python, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider", "-o", "pythonpath=tests",
                       "-m", "gpu", *GPU_TESTS.split()]
                self.jobs.append(Job(name, cmd, dict(os.environ), "-m gpu", gated=False))
                continue
            model, flags, _ = ROWS[name]
            arch = {"turbo": SMOKE_TURBO if a.smoke else TURBO, "sd15": SMOKE_SD15 if a.smoke else SD15}[model]
            words = flags.split()
            if a.smoke:  # the eager backend on a CPU: the compiled backend's knobs do not apply
                words = [w for i, w in enumerate(words)
                         if w not in KNOB_FLAGS and not (i and words[i - 1] in KNOB_VALUE_FLAGS)]
            frames = [] if "--frames" in words else ["--frames", str(a.frames)]
            cache = self.caches / WARM_OF.get(name, name)
            env = dict(os.environ, DREAMCAM_ENGINES_DIR=str(cache), TRITON_CACHE_DIR=str(cache / "triton"),
                       TORCHINDUCTOR_COMPILE_THREADS=threads)
            env.pop("TORCHINDUCTOR_CACHE_DIR", None)
            cmd = [a.python, "-m", "dreamcam.bench.engine", *arch.split(), *frames, "--json",
                   "--out", str(self.out / f"{name}.bench.json"), "--timing-gate", str(self.gates / name), *words]
            self.jobs.append(Job(name, cmd, env, " ".join(words)))

    # ------------------------------------------------------------------ processes

    def startable(self, job: Job) -> bool:
        """A warm row waits until the row whose cache it reuses has ended (skipped if that failed)."""
        dep = next((j for j in self.jobs if j.name == WARM_OF.get(job.name)), None)
        if dep is not None and dep.status not in ("ok", "pending", "running"):
            job.status = f"skipped ({dep.name}: {dep.status})"
        return dep is None or dep.status == "ok"

    def on_sigterm(self, *_: object) -> None:
        """SIGTERM ends the sweep with SystemExit(143), so run()'s clean-up kills the rows; while
        `held` (a row being started, the clean-up itself) it waits for the end of that block."""
        if self._held:
            self._term = True
        else:
            sys.exit(143)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A block a SIGTERM must not cut: one cut between a row's Popen and its `running` status
        left that row out of the clean-up, running on (seen on a loaded CI machine)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held and self._term:
                self._term = False
                sys.exit(143)

    def start(self, job: Job) -> None:
        if job.name not in WARM_OF:
            shutil.rmtree(self.caches / job.name, ignore_errors=True)
        (self.out / f"{job.name}.bench.json").unlink(missing_ok=True)
        job.t_start = time.monotonic()
        with self.held(), open(self.out / f"{job.name}.log", "w") as logf:
            job.proc = subprocess.Popen(job.cmd, stdout=logf, stderr=subprocess.STDOUT, env=job.env,
                                        start_new_session=True, cwd=self.args.cwd)
            job.status = "running"
        if self.holder is not None:  # never start work beside a timed stretch
            job.pause(time.monotonic())
        self.say(f"start {job.name}: {' '.join(job.cmd[2:])}")

    def kill(self, job: Job, status: str) -> None:
        job.resume(time.monotonic())
        job.signal(signal.SIGKILL)
        job.proc.wait()
        job.status = status

    def finish(self, job: Job, now: float) -> None:
        job.row_s = round(now - job.t_start, 1)
        if job.status == "running":
            rc = job.proc.returncode
            job.status = "ok" if rc == 0 else f"failed rc={rc}"
            if job.gated and rc == 0 and not (self.out / f"{job.name}.bench.json").exists():
                job.status = "no result"
        if self.holder is job:
            self.release(now)
        self.say(f"end {job.name}: {job.status} after {job.row_s}s ({job.paused_s:.1f}s paused, "
                 f"{job.timed_s:.1f}s timing); log {job.name}.log")
        self.report()

    # ------------------------------------------------------------------ the gate

    def grant(self, now: float) -> None:
        for job in self.jobs:  # priority order
            if job.status != "running" or not job.gated:
                continue
            n = job.stretches + 1
            if (self.gates / f"{job.name}.ready{n}").exists():
                for other in self.jobs:
                    if other is not job and other.status == "running":
                        other.pause(now)
                time.sleep(self.args.settle)  # queued GPU work of the paused processes drains
                job.resume(now)
                self.holder, self.t_grant = job, time.monotonic()
                (self.gates / f"{job.name}.go{n}").write_text("")
                return

    def release(self, now: float) -> None:
        job = self.holder
        job.stretches += 1
        job.timed_s += now - self.t_grant
        self.holder = None
        for other in self.jobs:
            if other.status == "running":
                other.resume(now)

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        try:
            self._run()
        finally:  # an error or a signal must not leave rows behind, stopped ones holding the GPU
            with self.held():
                for job in self.jobs:
                    if job.status == "running":
                        self.kill(job, "killed: the sweep ended")
                        self.finish(job, time.monotonic())  # recorded in sweep.json like any other end

    def _run(self) -> None:
        a = self.args
        self.make_jobs()
        pending = list(self.jobs)
        tests = [j for j in pending if not j.gated]
        for j in tests:  # the tests beside the first rows, outside the --jobs count
            pending.remove(j)
            self.start(j)
        while pending or any(j.status == "running" for j in self.jobs):
            now = time.monotonic()
            left = a.budget - (now - self.t0)
            running = [j for j in self.jobs if j.status == "running" and j.gated]
            while len(running) < a.jobs:
                ready = [j for j in pending if self.startable(j)]
                for j in [j for j in pending if j.status != "pending"]:  # skipped: its cache's row failed
                    pending.remove(j)
                    self.say(f"skip {j.name}: {j.status}")
                if not ready:
                    break
                job = ready[0]
                pending.remove(job)
                if left < a.min_row:
                    job.status = f"skipped ({left:.0f}s of the budget left)"
                    self.say(f"skip {job.name}: {job.status}")
                    continue
                self.start(job)
                running.append(job)
            for job in [j for j in self.jobs if j.status == "running"]:
                if job.proc.poll() is not None:
                    self.finish(job, time.monotonic())
                elif left <= 0:
                    self.kill(job, "cut at the budget")
                    self.finish(job, time.monotonic())
                elif job.active_s(now) > (a.test_cap if not job.gated else a.row_cap):
                    self.kill(job, "timeout")
                    self.finish(job, time.monotonic())
            if self.holder is not None:
                n = self.holder.stretches + 1
                if (self.gates / f"{self.holder.name}.done{n}").exists():
                    self.release(time.monotonic())
                elif time.monotonic() - self.t_grant > a.stretch_cap:
                    self.say(f"{self.holder.name}: timed stretch over {a.stretch_cap}s, killed")
                    self.kill(self.holder, "timeout while timing")
                    self.finish(self.holder, time.monotonic())
            if self.holder is None:
                self.grant(time.monotonic())
            time.sleep(0.05)
        self.report(final=True)
        self.say(f"sweep done in {time.monotonic() - self.t0:.0f}s of {a.budget}s")

    # ------------------------------------------------------------------ results

    def rows(self) -> list[dict]:
        rows = []
        for job in self.jobs:
            meta = {"row": job.name, "status": job.status, "flags": job.flags, "row_s": job.row_s,
                    "paused_s": round(job.paused_s, 1)}
            path = self.out / f"{job.name}.bench.json"
            if job.gated and job.status == "ok" and path.exists():
                r = json.loads(path.read_text())
                d = r["dreamcam"]
                meta.update(arch=r["arch"], size=r["size"], steps=len(r["t_index_list"]),
                            frame_buffer=r.get("frame_buffer_size"), gpu=r["env"].get("gpu", "cpu"),
                            torch=r["env"]["torch"], compile_s=r.get("compile_s"), knobs=r.get("knobs"),
                            **{k: d[k] for k in ("fps", "p50_ms", "p99_ms", "startup_s", "gpu_mem_peak_mib")})
                pipe = r.get("pipelined", {})
                meta.update(pipe_fps=pipe.get("fps"), pipe_p99_ms=pipe.get("p99_ms"), pipe_error=pipe.get("error"))
                if "peer" in r:
                    meta.update(peer_fps=r["peer"]["fps"], peer_p50_ms=r["peer"]["p50_ms"],
                                peer_p99_ms=r["peer"]["p99_ms"], ratio_fps=r["ratio_fps"])
                if "loop" in r:
                    meta.update(loop_fps=r["loop"]["fps"], loop_vs_engine=r["loop_vs_engine"],
                                loop_vs_pipelined=r.get("loop_vs_pipelined"))
            rows.append(meta)
        return rows

    def report(self, final: bool = False) -> None:
        rows = self.rows()
        (self.out / "sweep.json").write_text(json.dumps({"rows": rows}, indent=1))
        if not final:
            return
        base = next((r for r in rows if r["row"] == "base" and "fps" in r), None)
        head = (f"{'row':18s} {'status':10s} {'fps':>7s} {'vs base':>7s} {'p50':>6s} {'p99':>6s} {'pipe':>7s} "
                f"{'peer':>6s} {'ratio':>6s} {'start':>6s} {'paused':>6s}  flags")
        lines = [head]
        for r in rows:
            if "fps" not in r:
                lines.append(f"{r['row']:18s} {r['status'][:30]:30s}  {r['flags']}")
                continue
            same = base and all(r[k] == base[k] for k in ("arch", "size", "steps"))
            rel = f"{r['fps'] / base['fps']:.3f}" if same else ""
            opt = {k: ("" if r.get(k) is None else f"{r[k]:.1f}") for k in ("pipe_fps", "peer_fps")}
            ratio = "" if r.get("ratio_fps") is None else f"{r['ratio_fps']:.2f}"
            lines.append(f"{r['row']:18s} {r['status']:10s} {r['fps']:7.1f} {rel:>7s} {r['p50_ms']:6.2f} "
                         f"{r['p99_ms']:6.2f} {opt['pipe_fps']:>7s} {opt['peer_fps']:>6s} {ratio:>6s} "
                         f"{r['startup_s']:6.1f} {r['paused_s']:6.1f}  {r['flags']}")
            if r.get("loop_fps") is not None:
                lines.append(f"{'':18s} live loop {r['loop_fps']:.1f} fps = {r['loop_vs_engine']} of engine-only"
                             f" ({r.get('loop_vs_pipelined')} of pipelined)")
            if r.get("pipe_error"):
                lines.append(f"{'':18s} pipelined timing failed: {r['pipe_error']}")
        prof = self.out / "profile.bench.json"
        if prof.exists():
            r = json.loads(prof.read_text())
            if "stages" in r:
                st = r["stages"]
                how = "each in a CUDA graph of its own" if st.get("graphs") else "kernel by kernel"
                lines.append(f"profile, per stage (ms per call, each alone, {how}): "
                             + ", ".join(f"{k[:-3]} {v:.3f}" for k, v in st.items() if k.endswith("_ms")))
            if "profile_kinds" in r:
                lines.append("profile, by kind (ms per frame, kernel by kernel): "
                             + ", ".join(f"{k[:-3]} {v:.3f}" for k, v in r["profile_kinds"].items()))
            for k in r.get("profile", [])[:15]:
                lines.append(f"  {k['ms_per_frame']:8.3f} ms {k['share']:6.1%} x{k['calls_per_frame']:<6g} {k['name'][:110]}")
        gpu = next((r["gpu"] for r in rows if "gpu" in r), "?")
        lines.append(f"{gpu}; fps/p50/p99 of the synchronous path (per call: 2 frames in fb2 rows); pipe = two deep; "
                     "start = cold first start incl. pauses and contention")
        for line in lines:
            self.say(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/dreamcam-sweep"))
    p.add_argument("--caches", default=os.environ.get("CACHES", "/tmp/dreamcam-sweep-caches"))
    p.add_argument("--rows", default=os.environ.get("ROWS", "gputests," + ",".join(ROWS)),
                   help="comma-separated, in priority order (gputests: the GPU-only tests)")
    p.add_argument("--budget", type=float, default=float(os.environ.get("BUDGET", "540")),
                   help="seconds for the whole sweep; rows still running then are cut (default 540)")
    p.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS", "8")), help="bench rows at once (default 8)")
    p.add_argument("--frames", type=int, default=int(os.environ.get("N", "0")) or None)
    p.add_argument("--row-cap", type=float, default=float(os.environ.get("T", "480")), help="unpaused seconds per row")
    p.add_argument("--test-cap", type=float, default=240)
    p.add_argument("--stretch-cap", type=float, default=90, help="seconds one timed stretch may hold the machine")
    p.add_argument("--min-row", type=float, default=90, help="do not start a row with less budget left")
    p.add_argument("--settle", type=float, default=0.3)
    p.add_argument("--smoke", action="store_true", default=bool(os.environ.get("SMOKE")))
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--cwd", default=os.getcwd(), help="where the tests run from (the repository root)")
    args = p.parse_args(argv)
    args.rows = [r for r in args.rows.replace(" ", ",").split(",") if r]
    unknown = [r for r in args.rows if r not in ROWS and r != "gputests"]
    if unknown:
        p.error(f"unknown rows {unknown}; known: gputests, {', '.join(ROWS)}")
    args.frames = args.frames or (20 if args.smoke else 150)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    sweep = Sweep(args)
    signal.signal(signal.SIGTERM, sweep.on_sigterm)  # so run()'s clean-up runs on a kill too
    sweep.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
