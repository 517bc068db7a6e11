#!/usr/bin/env bash
# The issue-5 benchmark table in one go: dreamcam (compiled backend) and StreamDiffusion 0.1.1 side
# by side on random-weight real architectures, plus the live loop and a second (cached) start.
#
# On the lent GPU (from the repository root that the device tool sends):
#   bash .gpurun/tools/gpu_bench.sh            # wheels in .whl/, code in .gpurun/plugin, results in $OUT
# On a CPU, end to end with tiny shapes (checks the script itself):
#   SMOKE=1 OUT=/tmp/bench bash tools/gpu_bench.sh
# KNOBS adds compiled-backend flags to every row once tools/gpu_sweep.sh has shown which pay off,
# e.g. KNOBS="--fuse-qkv --inductor tuned" (not with SMOKE=1: the eager backend refuses them).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/dreamcam-bench}
PY=${PY:-python3}
T=${T:-170}          # seconds per configuration (the compile of a real UNet takes about a minute)
KNOBS=${KNOBS:-}
export DREAMCAM_ENGINES_DIR=${DREAMCAM_ENGINES_DIR:-/tmp/dreamcam-engines}
. "$ROOT/tools/gpu_env.sh"

if [ -n "${SMOKE:-}" ]; then
  ARCH1="--arch tiny"; ARCH2="--arch tiny"; S=64; W2=96; H2=64; N=20; BK=${BACKEND:-eager}; DEV=cpu
else
  ARCH1="--arch sd-turbo --random-weights"; ARCH2="--arch sd15 --random-weights"; S=512; W2=768; H2=448; N=300
  BK=${BACKEND:-compiled}; DEV=cuda
fi

bench() {  # name, flags...
  local name=$1; shift
  echo "== $name: dreamcam bench $*" | tee -a "$OUT/log.txt"
  set -o pipefail
  timeout "$T" $PY -m dreamcam.bench.engine --device $DEV --backend $BK --frames $N --json --out "$OUT/$name.json" $KNOBS "$@" \
    2>&1 | tee -a "$OUT/log.txt" && return 0
  if [ "$BK" = compiled ]; then  # keep a figure even if torch.compile breaks: CUDA graph of eager kernels
    echo "== $name failed with torch.compile${KNOBS:+ $KNOBS}; again with --no-compile, no knobs" | tee -a "$OUT/log.txt"
    timeout "$T" $PY -m dreamcam.bench.engine --device $DEV --backend $BK --no-compile --frames $N --json \
      --out "$OUT/$name.json" "$@" 2>&1 | tee -a "$OUT/log.txt"
  fi
}

bench turbo512      $ARCH1 --steps 1 --t-index-list 35 --width $S --height $S --peer --loop
bench sd15_512x4    $ARCH2 --t-index-list 0,16,32,45 --cfg-type self --guidance 1.4 --width $S --height $S --peer
bench turbo768x448  $ARCH1 --steps 1 --t-index-list 35 --width $W2 --height $H2 --peer
bench turbo512_warm $ARCH1 --steps 1 --t-index-list 35 --width $S --height $S
# where the milliseconds go: compiled kernels launched one by one (a replayed graph hides them)
[ -n "${PROFILE:-}" ] && bench turbo512_profile $ARCH1 --steps 1 --t-index-list 35 --width $S --height $S \
  --no-cuda-graph --frames 30 --profile 20

$PY - "$OUT" <<'PYEOF' | tee -a "$OUT/log.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.stem != "all"}
(out / "all.json").write_text(json.dumps(rows, indent=1))
for name, r in rows.items():
    d, p = r["dreamcam"], r.get("peer")
    line = f"{name:14s} dreamcam[{r['backend']}] {d['fps']:8.1f} fps p50 {d['p50_ms']:7.2f} p99 {d['p99_ms']:7.2f} start {d['startup_s']:6.1f}s mem {d['gpu_mem_peak_mib']}"
    if p:
        line += f" | peer {p['fps']:7.1f} fps p50 {p['p50_ms']:7.2f} p99 {p['p99_ms']:7.2f} | x{r['ratio_fps']}"
    if "fps" in r.get("pipelined", {}):
        line += f" | pipelined {r['pipelined']['fps']:.1f} fps"
    elif "pipelined" in r:
        line += f" | pipelined FAILED {r['pipelined'].get('error')}"
    if "loop" in r:
        line += f" | loop {r['loop']['fps']:.1f} fps ({r['loop_vs_engine']})"
    print(line)
PYEOF
