#!/usr/bin/env bash
# The GPU figures, in one call of a lent GPU machine (the `device` tool; Python 3.12 and torch
# there, but no MLflow, pydantic-settings or network):
#   here, once:  bash ../shared/device/wheels.sh     (the wheels that machine lacks, into .whl)
#   then:        run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
# It runs benchmarks/run.py at the real size on the GPU (without its 20-epoch fits: the `train`
# below is that fit, as a user runs it), then `matching train --epochs 20 --device cuda` on the
# same data and prepared store, then `matching evaluate`. Tables, JSON and logs go to $OUT (the
# device tool brings that folder back). Each step has a time limit, so that what was measured
# comes back within the call's ten minutes.
# Try it on a CPU machine first: GPU_DEVICE=cpu BENCH_PAIRS=20000 BIG_PAIRS=100000 bash benchmarks/gpu.sh
set -uo pipefail
root=$PWD
out=${OUT:-/tmp/gpu-out}
work=${GPU_WORK:-/tmp/gpu-bench}
device=${GPU_DEVICE:-cuda}
mkdir -p "$out" "$work"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$root
else
  export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  nproc
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} > "$out/machine.txt"
cat "$out/machine.txt"

bench=(--device "$device" --repeats 1 --fit-epochs 0 --workdir "$work" --keep)
bench+=(--out "$out/bench.txt" --json "$out/bench.json")
[ -n "${BENCH_PAIRS:-}" ] && bench+=(--pairs "$BENCH_PAIRS")
[ -n "${BIG_PAIRS:-}" ] && bench+=(--big-pairs "$BIG_PAIRS")
start=$SECONDS
timeout "${BENCH_S:-390}" python3 benchmarks/run.py "${bench[@]}" > "$out/bench.log" 2>&1
echo "benchmarks/run.py: exit $?, $((SECONDS - start)) s"
tail -n 45 "$out/bench.log"

# The benchmark's data and prepared store, read by the CLI as a user's folder would be.
cp settings.toml "$work/" && cd "$work" || exit 1
start=$SECONDS
timeout "${TRAIN_S:-150}" python3 -m matching_cli train --epochs 20 --device "$device" --json \
  > "$out/train.json" 2> "$out/train.log"
echo "matching train --epochs 20 --device $device: exit $?, $((SECONDS - start)) s"
grep -v "started\|: done" "$out/train.log" | tail -n 25
cat "$out/train.json"
start=$SECONDS
timeout 60 python3 -m matching_cli evaluate --json > "$out/evaluate.json" 2> "$out/evaluate.log"
echo "matching evaluate: exit $?, $((SECONDS - start)) s"
cat "$out/evaluate.json"
