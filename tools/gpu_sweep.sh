#!/usr/bin/env bash
# Which compiled-backend knobs are worth it, in ONE device call of at most ~7 minutes.
#
# Each row is `dreamcam bench --arch sd-turbo --random-weights --backend compiled`, 512x512, 1 step,
# N frames, with one knob set, in its own process, under its own `timeout`, with its own fresh
# compile cache (DREAMCAM_ENGINES_DIR and TRITON_CACHE_DIR per row): every startup_s is a COLD
# start, so rows compare fairly (the first-start figure users meet). Rows run in the order of what
# they are expected to tell; an overall guard (BUDGET seconds from the script's start) skips the
# rows that no longer fit, so the call ends in time with the most informative rows done.
#
# On the lent GPU (from the repository root that the device tool sends; see docs/PERFORMANCE.md):
#   bash .gpurun/tools/gpu_sweep.sh        # wheels in .whl/, code in .gpurun/plugin, results in $OUT
# On a CPU, end to end with tiny shapes and the eager backend (checks the script itself; the
# knob flags are dropped there because the compiled backend needs CUDA):
#   SMOKE=1 OUT=/tmp/sweep bash tools/gpu_sweep.sh
# Knobs: BUDGET (default 400 s), T (per-row cap, default 170 s), N (timed frames, default 150),
# ROWS (space-separated row names to run, in that order; default: all below). The profile row is
# not cold: it reuses base's compile cache (warm start) and times without the CUDA graph.
set -u
T0=$(date +%s)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/dreamcam-sweep}
PY=${PY:-python3}
BUDGET=${BUDGET:-400}
T=${T:-170}
MIN_ROW=${MIN_ROW:-60}     # a row needs at least this long (process start, build, cold compile)
CACHES=${CACHES:-/tmp/dreamcam-sweep-caches}
unset TORCHINDUCTOR_CACHE_DIR
. "$ROOT/tools/gpu_env.sh"

if [ -n "${SMOKE:-}" ]; then
  TURBO="--arch tiny --width 64 --height 64 --t-index-list 35 --device cpu --backend eager"
  SD15="--arch tiny --width 64 --height 64 --t-index-list 0,16,32,45 --cfg-type self --guidance 1.4 --device cpu --backend eager"
  N=${N:-20}
else
  TURBO="--arch sd-turbo --random-weights --width 512 --height 512 --t-index-list 35 --device cuda --backend compiled"
  SD15="--arch sd15 --random-weights --width 512 --height 512 --t-index-list 0,16,32,45 --cfg-type self --guidance 1.4 --device cuda --backend compiled"
  N=${N:-150}
fi

# name -> extra flags, in the order they run; each line says what its row decides
declare -A FLAGS=(
  [base]=""                                          # today's defaults: the reference for every row
  [fuse_tuned]="--fuse-qkv --inductor tuned"         # diffusers' recipe: is better kernel code worth it?
  [blocks]="--compile-scope blocks"                  # first start much shorter at the same fps? -> default
  [profile]="--no-cuda-graph --frames 30 --profile 20"  # where the ms go: per stage (TAESD vs UNet) and top kernels; reuses base's warm cache
  [fb2]="--frame-buffer 2"                           # fps at 2 frames per UNet call (1 frame more latency)
  [fuse_tuned_freeze]="--fuse-qkv --inductor tuned-freeze"  # constant-folded weights on top
  [tuned]="--inductor tuned"                         # splits fuse_tuned: the Inductor settings alone
  [fuse]="--fuse-qkv"                                # splits fuse_tuned: the fused projections alone
  [sd15x4_fuse_tuned]="--fuse-qkv --inductor tuned"  # the sd15 4-step target (100 fps) with the recipe
  [blocks_autotune]="--compile-scope blocks --compile-mode max-autotune-no-cudagraphs"  # autotune affordable per block?
  [gputests]="-m gpu"                                # the GPU-only tests (pipelined streams, knobs, framing): not a bench row
)
# gputests second: the three-stream path has never run on a GPU, and a fault there matters more than a knob;
# fb2 before the kernel knobs: it alone says whether the 250 fps target is in reach without new kernels
ROWS=${ROWS:-"base gputests profile fb2 fuse_tuned blocks fuse_tuned_freeze tuned fuse sd15x4_fuse_tuned blocks_autotune"}
GPU_TESTS="tests/test_setters_gpu.py tests/test_pipeline_backends.py tests/test_gpu_review_step.py tests/test_backend_select.py tests/test_framing_gpu.py tests/test_knobs_modules.py tests/test_loading.py"

gputests() {  # cap: the GPU-marked tests, which skip on the CPU (pytest comes as a wheel in .whl/)
  local cap=$1 t_row=$(date +%s) rc status=ok
  echo "== gputests (cap ${cap}s): pytest -m gpu" | tee -a "$OUT/log.txt"
  # from the repository root (where the device tool runs commands); the code under test is $PYTHONPATH's
  # -v into gputests.txt: a run killed at the cap still shows which tests passed and which one hung
  timeout -k 10 "$cap" $PY -m pytest -v -rs -p no:cacheprovider -o pythonpath= -m gpu $GPU_TESTS \
    2>&1 | tee "$OUT/gputests.txt" | tail -40 | tee -a "$OUT/log.txt"
  rc=${PIPESTATUS[0]}
  case $rc in 0) ;; 124|137) status=timeout;; *) status="failed rc=$rc";; esac
  echo "{\"row\": \"gputests\", \"status\": \"$status\", \"flags\": \"-m gpu\", \"row_s\": $(( $(date +%s) - t_row ))}" \
    > "$OUT/gputests.json"
}

row() {  # name: run one row, or record why it did not run
  local name=$1 flags=${FLAGS[$1]-} left arch=$TURBO
  if [ -z "${FLAGS[$1]+set}" ]; then echo "== $name: unknown row (known: ${!FLAGS[*]})" | tee -a "$OUT/log.txt"; return; fi
  left=$(( BUDGET - ($(date +%s) - T0) ))
  if [ "$left" -lt "$MIN_ROW" ]; then
    echo "== $name: skipped, ${left}s of the ${BUDGET}s budget left" | tee -a "$OUT/log.txt"
    echo "{\"row\": \"$name\", \"status\": \"skipped\", \"flags\": \"$flags\"}" > "$OUT/$name.json"
    return
  fi
  if [ "$name" = gputests ]; then gputests $(( left < 150 ? left : 150 )); return; fi
  case $name in sd15*) arch=$SD15;; esac
  if [ -n "${SMOKE:-}" ]; then  # eager on the CPU: the compiled backend's knobs do not apply
    flags=$(echo " $flags " | sed -E 's/ --(fuse-qkv|inductor [^ ]+|compile-scope [^ ]+|compile-mode [^ ]+)//g')
  fi
  local cap=$(( left < T ? left : T )) t_row=$(date +%s) rc
  echo "== $name (cap ${cap}s): dreamcam bench $arch --frames $N $flags" | tee -a "$OUT/log.txt"
  local cache=$name
  if [ "$name" = profile ]; then cache=base; else rm -rf "${CACHES:?}/$name"; fi  # profile: base's warm cache
  rm -f "$OUT/$name.bench.json"
  DREAMCAM_ENGINES_DIR=$CACHES/$cache TRITON_CACHE_DIR=$CACHES/$cache/triton \
    timeout -k 10 "$cap" $PY -m dreamcam.bench $arch --frames $N --json --out "$OUT/$name.bench.json" $flags \
    2>&1 | tee -a "$OUT/log.txt" | grep -v '^{'
  rc=${PIPESTATUS[0]}
  local status=ok
  case $rc in 0) ;; 124|137) status=timeout;; *) status="failed rc=$rc";; esac  # 137: killed by -k after the cap
  [ -s "$OUT/$name.bench.json" ] || [ "$status" != ok ] || status="no result"
  echo "{\"row\": \"$name\", \"status\": \"$status\", \"flags\": \"$flags\", \"row_s\": $(( $(date +%s) - t_row ))}" \
    > "$OUT/$name.json"
  echo "== $name: $status in $(( $(date +%s) - t_row ))s" | tee -a "$OUT/log.txt"
}

for name in $ROWS; do row "$name"; done

$PY - "$OUT" $ROWS <<'PYEOF' | tee -a "$OUT/log.txt"
import json, pathlib, sys
out, names = pathlib.Path(sys.argv[1]), sys.argv[2:]
rows = []
for name in names:
    meta_path = out / f"{name}.json"
    if not meta_path.exists():
        continue
    meta = json.loads(meta_path.read_text())
    bench_path = out / f"{name}.bench.json"
    if meta["status"] == "ok" and bench_path.exists():
        r = json.loads(bench_path.read_text())
        meta.update(arch=r["arch"], size=r["size"], steps=len(r["t_index_list"]), frame_buffer=r.get("frame_buffer_size"),
                    gpu=r["env"].get("gpu", "cpu"), torch=r["env"]["torch"], compile_s=r.get("compile_s"),
                    pipe_fps=r.get("pipelined", {}).get("fps"), pipe_error=r.get("pipelined", {}).get("error"),
                    **{k: r["dreamcam"][k] for k in ("fps", "p50_ms", "p99_ms", "startup_s", "gpu_mem_peak_mib")})
    rows.append(meta)
base = next((r for r in rows if r["row"] == "base" and "fps" in r), None)
(out / "sweep.json").write_text(json.dumps({"cold_start": True, "rows": rows}, indent=1))
print(f"{'row':20s} {'status':10s} {'fps':>8s} {'vs base':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'start s':>8s} {'compile s':>9s} {'pipe fps':>8s}  flags")
for r in rows:
    if "fps" not in r:
        print(f"{r['row']:20s} {r['status']:10s} {'':>8s} {'':>8s} {'':>8s} {'':>8s} {'':>8s} {'':>9s} {'':>8s}  {r['flags'].strip()}")
        continue
    same = base and all(r[k] == base[k] for k in ("arch", "size", "steps"))  # fb2 compares: fps counts frames
    rel = f"{r['fps'] / base['fps']:.3f}" if same else ""
    comp = "" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
    pipe = "" if r.get("pipe_fps") is None else f"{r['pipe_fps']:.1f}"
    print(f"{r['row']:20s} {r['status']:10s} {r['fps']:8.1f} {rel:>8s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
          f"{r['startup_s']:8.1f} {comp:>9s} {pipe:>8s}  {r['flags'].strip()}")
    if r.get("pipe_error"):
        print(f"{'':20s} pipelined timing failed: {r['pipe_error']}")
prof_path = out / "profile.bench.json"
if prof_path.exists():
    r = json.loads(prof_path.read_text())
    if "stages" in r:
        st = r["stages"]
        print("profile, per stage (ms per call, each alone, no CUDA graph): " +
              ", ".join(f"{k[:-3]} {v:.3f}" for k, v in st.items()))
    for k in r.get("profile", [])[:10]:
        print(f"  {k['ms_per_frame']:8.3f} ms {k['share']:6.1%} x{k['calls_per_frame']:<6g} {k['name']}")
if rows and "gpu" in next((r for r in rows if "gpu" in r), {}):
    print(f"all rows cold-start (fresh compile cache each); {next(r for r in rows if 'gpu' in r)['gpu']}; "
          "p50/p99 per call (2 frames per call in fb2)")
PYEOF
echo "sweep done in $(( $(date +%s) - T0 ))s of ${BUDGET}s" | tee -a "$OUT/log.txt"
