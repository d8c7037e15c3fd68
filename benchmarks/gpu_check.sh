#!/usr/bin/env bash
# The GPU check in one call (planned to end within 8 minutes on one H100/H200):
#   1. the CUDA tests (tests/test_cuda.py: bf16 and channels_last_3d against fp32, a compiled
#      training step, a training job on the GPU);
#   2. `mgpipe bench` on paper-size networks in fp32, bf16, bf16 + channels_last_3d, each also fed
#      by the real loaders from a store generated here (the demo generator, 8 subjects), with the
#      data-path costs beside them; then the same + torch.compile as a step of its own (it needs a
#      C compiler and Triton: COMPILE=0 leaves it out);
#   3. one real training epoch of the demo recipe on the GPU (joint, rgb, merge, fused_full);
#   4. one table: stdout and $OUT/gpu_table.md, with the targets checked.
# It always ends in its table: every step runs on its own, and the table lists each one (ok,
# FAILED with its exit status and last line, or skipped with the reason); the script exits 1
# where a step failed, 0 otherwise. Without CUDA every step that needs it is skipped and named,
# and what needs no GPU still runs (the store, a demo-size fp32 bench and the data path on the CPU).
# Loader workers (at most 12) are sized to the free space in /dev/shm (one per GiB): a container's
# small /dev/shm would otherwise end the bench with a bus error.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#   WHEELS=.wheels bash benchmarks/gpu_check.sh   # first install pyproject's runtime dependencies
#                                                 # (and pytest) from carried wheels (no internet)
#   FAIL_STEP=<step> ...                          # that step exits 1 instead (tests the table)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/results/gpu_check}
PY=${PYTHON:-python3}
WORK=$OUT/work
SUBJECTS=${SUBJECTS:-8}  # demo subjects in the generated store
mkdir -p "$OUT" "$WORK"
cd "$ROOT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
STEPS=$OUT/steps.tsv
printf 'step\tstatus\tseconds\tnote\n' > "$STEPS"
FAILED=0

# step NAME COMMAND...: runs it, its output in $OUT/logs/<name>.log (and on stderr), and records
# ok / FAILED (exit status, last line) with its seconds; never stops the script.
step() {
    local name=$1; shift
    local log="$OUT/logs/${name// /_}.log" t0 rc
    mkdir -p "$OUT/logs"
    echo "== $name" >&2
    t0=$(date +%s.%N)
    if [ "${FAIL_STEP:-}" = "$name" ]; then
        echo "FAIL_STEP=$name: this step fails on purpose" > "$log"; rc=1
    else
        "$@" > >(tee "$log" >&2) 2>&1; rc=$?
    fi
    local s
    s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc -eq 0 ]; then
        printf '%s\tok\t%s\t\n' "$name" "$s" >> "$STEPS"
    else
        FAILED=1
        printf '%s\tFAILED (exit %s)\t%s\t%s\n' "$name" "$rc" "$s" "$(grep -v '^\s*$' "$log" | tail -n 1 | tr '\t' ' ' | cut -c1-160)" >> "$STEPS"
    fi
    return 0
}
skip() { printf '%s\tskipped\t\t%s\n' "$1" "$2" >> "$STEPS"; }

install_wheels() {
    # every runtime dependency pyproject.toml names (torch and torchvision too, where they are
    # not installed already), and pytest for the CUDA tests
    local deps
    deps=$($PY - <<'EOF'
import re, sys
try:
    import tomllib
    deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
except ImportError:  # Python 3.10
    block = re.search(r"^dependencies = \[(.*?)^\]", open("pyproject.toml").read(), re.S | re.M).group(1)
    deps = re.findall(r'^\s*"([^"]+)"', block, re.M)
print("\n".join(deps + ["pytest"]))
EOF
) || return 1
    mapfile -t deps <<< "$deps"
    $PY -m pip install -q --no-index --find-links "$WHEELS" "${deps[@]}"
}
[ -n "${WHEELS:-}" ] && step "install wheels" install_wheels

CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
mg() { $PY -m mgpipe -q "$@"; }
SHM_MB=$(df -Pm /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
WORKERS=$(( ${SHM_MB:-0} / 1024 ))
[ "$WORKERS" -gt 12 ] && WORKERS=12
echo "== gpu_check: $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")' 2>&1 | tail -n 1); /dev/shm ${SHM_MB:-?} MB free: $WORKERS loader workers"

# 1. CUDA tests
if [ "$CUDA" = 1 ]; then
    step "CUDA tests" $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
else
    skip "CUDA tests" "tests/test_cuda.py: no CUDA device"
fi

# The store: demo data through clips, decode and pose with the library's own commands.
store() {
    [ -s "$WORK/keypoints.h5" ] && return 0
    # SUBJECTS subjects, one segment per class; the seed and frame size at their schema defaults
    local demo="{\"dataset\": {\"demo\": {\"num_subjects\": $SUBJECTS, \"segments_per_class\": 1}}}"
    mg demo-data "$WORK/demo" --config-json "$demo" &&
    mg clips --labels "$WORK/demo/labels.csv" --split "$WORK/demo/split.csv" --videos "$WORK/demo/videos" \
        --skeletons "$WORK/demo/skeletons" --config config.yaml --out "$WORK/clips.csv" \
        --classes-out "$WORK/classes.csv" &&
    mg decode --manifest "$WORK/clips.csv" --config config.yaml --out "$WORK/frames.h5" --threads 8 &&
    mg pose --manifest "$WORK/clips.csv" --skeletons "$WORK/demo/skeletons" --config config.yaml \
        --out "$WORK/keypoints.h5" --threads 8
}
step "store" store

# 2. bench (paper size on the GPU; demo size, fp32, a few steps on the CPU)
if [ "$CUDA" = 1 ]; then
    step "bench" mg bench --size paper --modes fp32,bf16,bf16+cl --stores "$WORK" --workers "$WORKERS" \
        --steps 12 --warmup 4 --device cuda --out "$OUT/bench.csv"
    if [ "${COMPILE:-1}" = 1 ]; then
        step "bench compile" mg bench --size paper --modes bf16+cl+compile --stores "$WORK" \
            --workers "$WORKERS" --steps 12 --warmup 4 --device cuda --out "$OUT/bench_compile.csv"
    else
        skip "bench compile" "COMPILE=0"
    fi
else
    skip "paper-size bench on the GPU" "no CUDA device: ran the demo-size fp32 bench on the CPU instead"
    step "bench" mg bench --size config --config config.yaml --modes fp32 --stores "$WORK" --workers 0 \
        --steps 2 --warmup 1 --device cpu --batch-pose 4 --batch-rgb 4 --batch-fused 4 --out "$OUT/bench.csv"
fi

# 3. one real training epoch of the demo recipe on the GPU
EPOCHS="$OUT/epochs.csv"
echo "stage,seconds" > "$EPOCHS"
if [ "$CUDA" = 1 ]; then
    cat > "$WORK/gpu.yaml" <<EOF
train: {device: cuda, amp: bf16, channels_last: true, workers: $(( WORKERS < 8 ? WORKERS : 8 ))}
rgb: {optim: {epochs: 1}}
pose_model: {optim: {epochs: 1}}
fused: {optim: {epochs: 1}}
EOF
    CFG=(--config config.yaml "$WORK/gpu.yaml")
    DATA=(--manifest "$WORK/clips.csv" --classes "$WORK/classes.csv" --keypoints "$WORK/keypoints.h5")
    epoch() {  # epoch MODEL [ARGS...]: one epoch, its seconds into epochs.csv
        local model=$1 t0 s; shift
        t0=$(date +%s.%N)
        mg train "$model" "${CFG[@]}" "${DATA[@]}" --frames "$WORK/frames.h5" --out-dir "$WORK/models/$model" "$@" || return
        s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        echo "train $model (1 epoch),$s" >> "$EPOCHS"
    }
    step "epoch joint" epoch joint
    step "epoch rgb" epoch rgb
    step "merge" mg merge --rgb "$WORK/models/rgb/model.pt" --pose "$WORK/models/joint/model.pt" "${CFG[@]}" \
        --model fused_full --out "$WORK/models/fused_full_init.pt"
    step "epoch fused_full" epoch fused_full --init "$WORK/models/fused_full_init.pt"
else
    skip "training epoch of the demo on the GPU" "no CUDA device"
fi

# 4. the table (what the steps left behind; a step that failed is in the table, not missing)
$PY - "$OUT" "$CUDA" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

out, cuda = Path(sys.argv[1]), sys.argv[2] == "1"
steps = pd.read_csv(out / "steps.tsv", sep="\t", keep_default_na=False, dtype=str)
lines = ["# mgpipe GPU check", "", "## Steps", "", steps.to_string(index=False)]
frames = [pd.read_csv(p) for p in (out / "bench.csv", out / "bench_compile.csv") if p.is_file()]
bench = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
if len(frames) == 2 and "vs fp32" in bench:  # the compile step ran alone: its ratio to bench.csv's fp32
    base = frames[0][frames[0]["mode"] == "fp32"].set_index("model")["network clips/s"]
    bench["vs fp32"] = [round(r["network clips/s"] / base.get(r["model"], float("nan")), 2)
                        for _, r in bench.iterrows()]
if len(bench):
    lines += ["", "## Networks alone and fed by the real loaders (clips/s)", "", bench.to_string(index=False)]
path = out / "bench_data_path.csv"
if path.is_file():
    lines += ["", "## Data path (one thread)", "", pd.read_csv(path).to_string(index=False)]
epochs = pd.read_csv(out / "epochs.csv") if (out / "epochs.csv").is_file() else pd.DataFrame()
if len(epochs):
    lines += ["", "## One training epoch of the demo on the GPU", "", epochs.to_string(index=False)]
if cuda and len(bench):
    checks = []
    for _, r in bench.iterrows():
        if "full/network" in r and pd.notna(r["full/network"]):
            checks.append(f"{r['model']} {r['mode']}: full step / network {r['full/network']:.2f} (target >= 0.9)")
    for model, g in bench.groupby("model"):
        best = g[g["mode"].str.startswith("bf16+cl")]["vs fp32"].max()
        checks.append(f"{model}: bf16 + channels_last_3d (+ compile) {best:.2f}x fp32 (target >= 1.8)")
    fused = bench[bench.model == "fused_full"]["network clips/s"].max()
    checks.append(f"fused_full paper size: {fused:.0f} clips/s (target >= 250)")
    lines += ["", "## Targets", ""] + [f"- {c}" for c in checks]
text = "\n".join(lines) + "\n"
(out / "gpu_table.md").write_text(text)
print(text)
EOF
[ $? -eq 0 ] || FAILED=1
exit $FAILED
