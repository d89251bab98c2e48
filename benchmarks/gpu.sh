#!/usr/bin/env bash
# The GPU figures, in one call of a lent GPU machine (the `device` tool; Python 3.12 and torch
# there, but no MLflow, pydantic-settings or network):
#   here, once:  bash ../shared/device/wheels.sh     (the wheels that machine lacks, into .whl)
#   then:        run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
# First what README lacks most: the demo data at the real size, `matching train --epochs 20
# --device cuda` on it (prepare included) and `matching evaluate`; then benchmarks/run.py at the
# real size on the GPU (without its 20-epoch fits: the train above is that fit) in the time left
# (TOTAL_S, 540 s, in all), cut short if need be: its JSON keeps every stage it finished, its log
# each stage's time. Tables, JSON and logs go to $OUT (the device tool brings that folder back).
# Try it on a CPU first: GPU_DEVICE=cpu PAIRS=20000 BIG_PAIRS=100000 bash benchmarks/gpu.sh
set -uo pipefail
root=$PWD
out=${OUT:-/tmp/gpu-out}
work=${GPU_WORK:-/tmp/gpu-work}
device=${GPU_DEVICE:-cuda}
pairs=${PAIRS:-1168516}
mkdir -p "$out" "$work"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$root
else
  export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
matching=(python3 -m matching_cli)  # the package is not installed there, only on PYTHONPATH
step() {  # step NAME SECONDS COMMAND...: run with a time limit, say how it went and how long
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  timeout -s INT -k 15 "$limit" "$@"
  echo "== $name: exit $?, $((SECONDS - start)) s" | tee -a "$out/steps.txt"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  echo "cores: $(nproc)"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$out/machine.txt"

cp settings.toml "$work/" && cd "$work" || exit 1
step "download --synthetic --pairs $pairs" 120 \
  "${matching[@]}" -q download --synthetic --pairs "$pairs" --force > "$out/download.log" 2>&1
step "train --epochs 20 --device $device" 240 \
  "${matching[@]}" train --epochs 20 --device "$device" --json > "$out/train.json" 2> "$out/train.log"
grep -v "started\|: done" "$out/train.log" | tail -n 30
cat "$out/train.json"
echo
step "evaluate" 60 "${matching[@]}" evaluate --json > "$out/evaluate.json" 2> "$out/evaluate.log"
cat "$out/evaluate.json"
echo

cd "$root" || exit 1
left=$(( ${TOTAL_S:-540} - SECONDS ))
bench=(--device "$device" --repeats 1 --fit-epochs 0 --workdir "$work/bench" --keep)
bench+=(--pairs "$pairs" --out "$out/bench.txt" --json "$out/bench.json")
[ -n "${BIG_PAIRS:-}" ] && bench+=(--big-pairs "$BIG_PAIRS")
if [ "$left" -gt 60 ]; then
  step "benchmarks/run.py (${left} s left)" "$left" \
    python3 benchmarks/run.py "${bench[@]}" > "$out/bench.log" 2>&1
  tail -n 50 "$out/bench.log"
else
  echo "== benchmarks/run.py: not run, ${left} s left" | tee -a "$out/steps.txt"
fi
