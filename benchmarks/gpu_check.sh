#!/usr/bin/env bash
# The GPU check in one call (planned to end within 8 minutes on one H100/H200):
#   1. the CUDA tests (tests/test_cuda.py: bf16 and channels_last_3d against fp32, a compiled
#      training step, a training job on the GPU);
#   2. `mgpipe bench` on paper-size networks in fp32, bf16, bf16 + channels_last_3d and + compile,
#      each also fed by the real loaders from a store generated here (the demo generator, 8
#      subjects), with the data-path costs beside them;
#   3. one real training epoch of the demo recipe on the GPU (joint, rgb, merge, fused_full);
#   4. one table: stdout and $OUT/gpu_table.md, with the targets checked.
# Without CUDA every step that needs it is skipped and named, what needs no GPU still runs (the
# store, a demo-size fp32 bench and the data path on the CPU), and the script exits 0.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#   WHEELS=.wheels bash benchmarks/gpu_check.sh   # install carried wheels first (no internet)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/results/gpu_check}
PY=${PYTHON:-python3}
WORK=$OUT/work
SUBJECTS=${SUBJECTS:-8}  # demo subjects in the generated store
mkdir -p "$OUT" "$WORK"
cd "$ROOT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then
    $PY -m pip install -q --no-index --find-links "$WHEELS" av hdf5plugin zstandard tqdm pyyaml jsonschema \
        matplotlib pytest
fi
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))")
SKIPPED=()
mg() { $PY -m mgpipe -q "$@"; }
stamp() { date +%s.%N; }
elapsed() { $PY -c "print(f'{$2 - $1:.1f}')"; }
echo "== gpu_check: $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")')"

# 1. CUDA tests
if [ "$CUDA" = 1 ]; then
    $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.txt" | tail -n 3
else
    SKIPPED+=("CUDA tests (tests/test_cuda.py): no CUDA device")
fi

# The store: demo data through clips, decode and pose with the library's own commands.
t0=$(stamp)
if [ ! -s "$WORK/keypoints.h5" ]; then
    # SUBJECTS subjects, one segment per class; the seed and frame size at their schema defaults
    DEMO="{\"dataset\": {\"demo\": {\"num_subjects\": $SUBJECTS, \"segments_per_class\": 1}}}"
    mg demo-data "$WORK/demo" --config-json "$DEMO"
    mg clips --labels "$WORK/demo/labels.csv" --split "$WORK/demo/split.csv" --videos "$WORK/demo/videos" \
        --skeletons "$WORK/demo/skeletons" --config config.yaml --out "$WORK/clips.csv" \
        --classes-out "$WORK/classes.csv"
    mg decode --manifest "$WORK/clips.csv" --config config.yaml --out "$WORK/frames.h5" --threads 8
    mg pose --manifest "$WORK/clips.csv" --skeletons "$WORK/demo/skeletons" --config config.yaml \
        --out "$WORK/keypoints.h5" --threads 8
fi
STORE_S=$(elapsed "$t0" "$(stamp)")
echo "== store ready in ${STORE_S} s"

# 2. bench (paper size on the GPU; demo size, fp32, a few steps on the CPU)
if [ "$CUDA" = 1 ]; then
    mg bench --size paper --modes fp32,bf16,bf16+cl,bf16+cl+compile --stores "$WORK" --workers 12 \
        --steps 12 --warmup 4 --device cuda --out "$OUT/bench.csv"
else
    SKIPPED+=("paper-size bench on the GPU: ran the demo-size fp32 bench on the CPU instead")
    mg bench --size config --config config.yaml --modes fp32 --stores "$WORK" --workers 0 \
        --steps 2 --warmup 1 --device cpu --batch-pose 4 --batch-rgb 4 --batch-fused 4 --out "$OUT/bench.csv"
fi

# 3. one real training epoch of the demo recipe on the GPU
EPOCHS="$OUT/epochs.csv"
echo "stage,seconds" > "$EPOCHS"
if [ "$CUDA" = 1 ]; then
    cat > "$WORK/gpu.yaml" <<'EOF'
train: {device: cuda, amp: bf16, channels_last: true, workers: 8}
rgb: {optim: {epochs: 1}}
pose_model: {optim: {epochs: 1}}
fused: {optim: {epochs: 1}}
EOF
    CFG=(--config config.yaml "$WORK/gpu.yaml")
    DATA=(--manifest "$WORK/clips.csv" --classes "$WORK/classes.csv" --keypoints "$WORK/keypoints.h5")
    for model in joint rgb; do
        t0=$(stamp)
        mg train "$model" "${CFG[@]}" "${DATA[@]}" --frames "$WORK/frames.h5" --out-dir "$WORK/models/$model"
        echo "train $model (1 epoch),$(elapsed "$t0" "$(stamp)")" >> "$EPOCHS"
    done
    mg merge --rgb "$WORK/models/rgb/model.pt" --pose "$WORK/models/joint/model.pt" "${CFG[@]}" \
        --model fused_full --out "$WORK/models/fused_full_init.pt"
    t0=$(stamp)
    mg train fused_full "${CFG[@]}" "${DATA[@]}" --frames "$WORK/frames.h5" \
        --init "$WORK/models/fused_full_init.pt" --out-dir "$WORK/models/fused_full"
    echo "train fused_full (1 epoch),$(elapsed "$t0" "$(stamp)")" >> "$EPOCHS"
else
    SKIPPED+=("training epoch of the demo on the GPU: no CUDA device")
fi

# 4. the table
$PY - "$OUT" "$CUDA" "${SKIPPED[@]+"${SKIPPED[@]}"}" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

out, cuda, skipped = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3:]
bench = pd.read_csv(out / "bench.csv")
lines = ["# mgpipe GPU check", "", "## Networks alone and fed by the real loaders (clips/s)", "",
         bench.to_string(index=False)]
path = out / "bench_data_path.csv"
if path.is_file():
    lines += ["", "## Data path (one thread)", "", pd.read_csv(path).to_string(index=False)]
epochs = pd.read_csv(out / "epochs.csv")
if len(epochs):
    lines += ["", "## One training epoch of the demo on the GPU", "", epochs.to_string(index=False)]
if cuda:
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
if skipped:
    lines += ["", "## Skipped", ""] + [f"- {s}" for s in skipped]
text = "\n".join(lines) + "\n"
(out / "gpu_table.md").write_text(text)
print(text)
EOF
