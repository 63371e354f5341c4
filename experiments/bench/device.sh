#!/usr/bin/env bash
# Everything a GPU run of lottery needs measured, in one script (under 8 minutes on one H200; on a
# CPU with --smoke, tiny sizes, under a minute: tests/training/test_bench.py runs it so it never rots).
#
#   bash experiments/bench/device.sh [--smoke]          (from the repository root)
#
# A header (device, driver, versions), then sections, each in its own processes and guarded: a
# section that fails or runs past its time prints one line and the others go on. One summary
# table last. The whole log goes to $OUT/device.log when OUT is set (the device machine's output
# folder), else to the work folder it names.
#   a. the quickstart (4 levels) twice in two processes: bitwise the same? by default, with deterministic=true,
#      and with JAX_DEFAULT_MATMUL_PRECISION=highest (no TF32); and default against highest
#   b. ResNet-20 and VGG-16 ms per masked step at batch 128, float32 and bfloat16, against PyTorch
#      with open_lth's masking on the same device, eager and float32 torch.compile (where torch is installed)
#   c. networks per second of a level's networks in stacks of width 1, 4, 8, 16, 32 (stacks.py),
#      LeNet-300-100 and ResNet-20
#   d. extrapolated: one 160-epoch ResNet-20 level (62,400 its x ms/step; per network at the best
#      stack width) and a 20-level, 3-replicate IMP run
#   e. peak device memory (jax memory_stats; n/a on a CPU)
#   f. Conv-2 on the real CIFAR-10 records (dataset=cifar10_subset), shortened: test accuracy, and
#      each level's remaining count against the counting rule (lottery.pruning.masks.level_counts).
#      Data from $LOTTERY_DATA_DIR, else .data/ (carried to a device machine), else ../shared/data.
#   g. 2:4 sparse tensor cores (PyTorch's to_sparse_semi_structured) against dense fp16 matmuls
#      (semi_structured.py; JAX has no N:M kernel, listed if one appears)
#   h. sparse training's mask updates: ms per step idle and with an update, against the masked
#      IMP step (sparse_training.py)
set -uo pipefail
SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH=$ROOT/experiments/bench
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device.XXXXXX")
LOG=${OUT:+$OUT/device.log}
LOG=${LOG:-$WORK/device.log}
[[ -n ${OUT:-} ]] && trap 'rm -rf "$WORK"' EXIT  # the log is under $OUT; the runs are not kept
PY=${PYTHON:-python3}  # the interpreter (tests: theirs)
export PY PYTHONUNBUFFERED=1 WANDB_MODE=disabled PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee -a "$LOG") 2>&1
py() { (cd "$BENCH" && "$PY" "$@"); }

failed() {  # a section's one line, kept for the summary
  echo "section $1 FAILED: $2"
  "$PY" - "$WORK/failed.json" "$1" "$2" <<'EOF'
import json, os, sys
path, section, why = sys.argv[1:]
d = json.load(open(path)) if os.path.exists(path) else {}
d[section] = why
json.dump(d, open(path, "w"))
EOF
}

section() {  # section LETTER SECONDS TITLE FUNCTION: run FUNCTION under a time limit, in a subshell
  local letter=$1 limit=$2 title=$3 fn=$4
  echo; echo "== $letter. $title =="
  local start=$SECONDS
  ( export -f "$fn" py; timeout --kill-after=10 "$limit" bash -c "$fn" ) > "$WORK/$letter.out" 2>&1
  local rc=$?
  cat "$WORK/$letter.out"
  if (( rc == 124 || rc == 137 )); then failed "$letter" "past its ${limit} s limit"
  elif (( rc )); then failed "$letter" "exit $rc: $(grep -v '^\s*$' "$WORK/$letter.out" | tail -1 | cut -c1-160)"
  fi
  echo "($letter: $((SECONDS - start)) s)"
}
export ROOT BENCH WORK SMOKE

echo "== device.sh$([[ $SMOKE == 1 ]] && echo ' --smoke') $(date -u +%FT%TZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) =="
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
else
  echo "nvidia-smi: not found"
fi
"$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version(), "|", platform.processor() or platform.machine())
for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "torch", "hydra", "omegaconf"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as error:
        print(f"{name}: {type(error).__name__}")
import jax
print("devices:", jax.devices())
EOF

# a. ---------------------------------------------------------------------------------------------
quickstart() {
  local sizes=(levels=3)  # 4 levels of the quickstart's 11: the question is bits, not accuracy
  [[ $SMOKE == 1 ]] && sizes=(levels=0 training.steps=10it training.eval_every=5it)
  local runs=(default:1 default:2 deterministic:1 deterministic:2 highest:1 highest:2)
  [[ $SMOKE == 1 ]] && runs=(default:1 default:2)  # smoke: two processes (deterministic=true: tests/training/test_precision.py)
  local cache=(compilation_cache="")  # timings compile afresh; smoke reuses the caller's cache
  [[ $SMOKE == 1 ]] && cache=()
  for run in "${runs[@]}"; do
    local kind=${run%:*} dir=$WORK/quick-${run/:/-} extra=() env=()
    [[ $kind == deterministic ]] && extra=(deterministic=true)
    [[ $kind == highest ]] && env=(JAX_DEFAULT_MATMUL_PRECISION=highest)
    (cd "$ROOT" && env "${env[@]}" "$PY" -m lottery.run output_dir="$dir" progress=false wandb.mode=disabled \
      "${cache[@]}" "${sizes[@]}" "${extra[@]}" > "$dir.log" 2>&1) || { tail -3 "$dir.log"; exit 1; }
    echo "$run $(py device.py digest "$dir")"
  done | tee "$WORK/quick.digests"
  "$PY" - "$WORK/quick.digests" "$WORK/quickstart.json" <<'EOF'
import json, sys
out = {}
for line in open(sys.argv[1]):
    run, digest = line.split()
    out.setdefault(run.split(":")[0], []).append(digest)
json.dump(out, open(sys.argv[2], "w"))
EOF
}
section a 100 "the quickstart twice in two processes: bitwise?" quickstart

# b. ---------------------------------------------------------------------------------------------
steps() { py device.py steps $([[ $SMOKE == 1 ]] && echo --smoke) --json "$WORK/steps.json"; }
section b 200 "ms per masked step, fp32 and bf16, against PyTorch (open_lth's masking)" steps

# c. ---------------------------------------------------------------------------------------------
stacks_lenet() {
  if [[ $SMOKE == 1 ]]; then
    py stacks.py --smoke --model lenet --json "$WORK/stacks_lenet.json"
  else
    py stacks.py --model lenet --networks 32 --widths 1,4,8,16,32 --steps 500 --repeats 3 --json "$WORK/stacks_lenet.json"
  fi
}
stacks_resnet() {
  [[ $SMOKE == 1 ]] && { echo "resnet: skipped by --smoke (a conv stack compiles for minutes on a CPU)"; exit 0; }
  py stacks.py --model resnet --networks 32 --widths 1,4,8,16,32 --steps 20 --repeats 2 --json "$WORK/stacks_resnet.json"
}
section c 60 "LeNet networks per second by stack width (stacks.py)" stacks_lenet
section c 120 "ResNet-20 networks per second by stack width (stacks.py)" stacks_resnet

# d, e: computed from b and c in the summary ----------------------------------------------------

# f. ---------------------------------------------------------------------------------------------
cifar() {
  local data=${LOTTERY_DATA_DIR:-}
  for candidate in "$data" "$ROOT/.data" "$ROOT/../shared/data"; do
    [[ -n $candidate && -d $candidate/cifar10-subset ]] && { data=$candidate; break; }
  done
  [[ -d $data/cifar10-subset ]] || { echo "no cifar10-subset/ in \$LOTTERY_DATA_DIR, .data or ../shared/data"; exit 1; }
  [[ $SMOKE == 1 ]] && { echo "skipped by --smoke: tests/data/test_cifar10_subset.py trains Conv-2 on these records and runs this section's check (device.py cifar)"; exit 0; }
  local sizes=(training.steps=800it levels=1)
  (cd "$ROOT" && "$PY" -m lottery.run +exp=conv2 dataset=cifar10_subset dataset.root="$data" "${sizes[@]}" \
    output_dir="$WORK/conv2" progress=false wandb.mode=disabled > "$WORK/conv2.log" 2>&1) || { tail -3 "$WORK/conv2.log"; exit 1; }
  py device.py cifar "$WORK/conv2" --json "$WORK/cifar.json"
}
section f 60 "Conv-2 on the CIFAR-10 records: accuracy, exact counts" cifar

# g. ---------------------------------------------------------------------------------------------
semi() { py semi_structured.py $([[ $SMOKE == 1 ]] && echo --smoke) --json "$WORK/semi.json"; }
section g 60 "2:4 sparse tensor cores against dense (semi_structured.py)" semi

# h. ---------------------------------------------------------------------------------------------
dst() {
  if [[ $SMOKE == 1 ]]; then py sparse_training.py --smoke --json "$WORK/sparse_training.json"
  else py sparse_training.py --steps 1000 --repeats 5 --json "$WORK/sparse_training.json"; fi
}
section h 90 "sparse training: ms per step, idle and updating, against the masked IMP step" dst

py device.py summary "$WORK"
echo "log: $LOG"
