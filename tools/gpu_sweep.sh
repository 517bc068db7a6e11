#!/usr/bin/env bash
# The issue-5 figures and the compiled-backend knobs in ONE device call (see tools/gpu_sweep.py:
# rows compile side by side and are timed one at a time while the others are paused).
#
# On the lent GPU (from the repository root that the device tool sends; see docs/PERFORMANCE.md):
#   bash .gpurun/tools/gpu_sweep.sh        # wheels in .whl/, code in .gpurun/plugin, results in $OUT
# On a CPU, end to end with tiny shapes and the eager backend (checks the driver itself):
#   SMOKE=1 OUT=/tmp/sweep bash tools/gpu_sweep.sh
# Knobs (environment): BUDGET (seconds, default 540), ROWS (comma-separated, priority order),
# JOBS (rows at once, default 8), N (timed frames, default 150), T (unpaused seconds per row).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/dreamcam-sweep}
PY=${PY:-python3}
unset TORCHINDUCTOR_CACHE_DIR
. "$ROOT/tools/gpu_env.sh"
exec $PY "$ROOT/tools/gpu_sweep.py" --out "$OUT" --python "$PY" "$@"
