# Sourced by tools/gpu_bench.sh and tools/gpu_sweep.sh (ROOT, OUT, PY set by the caller): the
# wheels the lent GPU lacks (.whl/, installed to /tmp/site) or, with SMOKE=1 or without wheels,
# this checkout's plugin/ on PYTHONPATH; then the machine, driver and torch at the top of the log.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$OUT"
if [ -z "${SMOKE:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$ROOT/plugin
else
  export PYTHONPATH=$ROOT/plugin${PYTHONPATH:+:$PYTHONPATH}
fi
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null;
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee "$OUT/log.txt"
