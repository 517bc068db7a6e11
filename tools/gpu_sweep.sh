#!/usr/bin/env bash
# The issue-5 figures and the compiled-backend knobs in ONE device call (see tools/gpu_sweep.py:
# rows compile side by side and are timed one at a time while the others are paused).
#
# On the lent GPU (from the repository root that the device tool sends; see docs/performance.md):
#   bash .gpurun/tools/gpu_sweep.sh        # wheels in .whl/, code in .gpurun/plugin, results in $OUT
# On a CPU, end to end with tiny shapes and the eager backend (checks the driver itself):
#   SMOKE=1 OUT=/tmp/sweep bash tools/gpu_sweep.sh
# Knobs (environment): BUDGET (seconds, default 540), ROWS (comma-separated, priority order),
# JOBS (rows at once, default 8), N (timed frames, default 150), T (unpaused seconds per row).
# The rows write many files; the device tool brings back only a few, so they are written to a work
# folder and $OUT gets log.txt, sweep.json and sweep.tgz (everything, each row's log included).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/dreamcam-sweep}
WORK=${WORK:-$(mktemp -d /tmp/dreamcam-sweep-work.XXXXXX)}
PY=${PY:-python3}
unset TORCHINDUCTOR_CACHE_DIR
mkdir -p "$OUT"
pack() {
  cp "$WORK/log.txt" "$WORK/sweep.json" "$OUT/" 2>/dev/null
  tar czf "$OUT/sweep.tgz" -C "$WORK" . && echo "results: $OUT/log.txt, $OUT/sweep.json, $OUT/sweep.tgz"
}
trap pack EXIT
OUT=$WORK . "$ROOT/tools/gpu_env.sh"
$PY "$ROOT/tools/gpu_sweep.py" --out "$WORK" --python "$PY" "$@"
