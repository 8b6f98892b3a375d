#!/usr/bin/env bash
# The GPU check: one prepared script for the first session that is lent a CUDA machine.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine (about 5 minutes)
#   QUICK=1 bash benchmarks/gpu_check.sh    # smoke run: tiny sizes (the test suite runs it)
#
# It prints the device, runs the CUDA tests (tests/test_cuda.py: CPU and CUDA give the same
# weights), times recipes A, B and dense N = 8192 with benchmarks/speed.py on the device,
# trains one epoch of the default recipe there, and writes everything to
# $OUT/gpu_check.json (default OUT=benchmarks/gpu_check). On a machine without CUDA it runs
# the same steps on the CPU at smoke sizes, so the script cannot rot before a GPU appears.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT="${OUT:-benchmarks/gpu_check}"
mkdir -p "$OUT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

DEVICE=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
"$PY" - "$OUT/device.json" <<'PYEOF'
import json, platform, sys, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "platform": platform.platform()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, memory_gib=round(p.total_memory / 2**30, 1), capability=list(torch.cuda.get_device_capability(0)))
else:
    info.update(device="cpu (no CUDA device: smoke run)")
print(json.dumps(info))
json.dump(info, open(sys.argv[1], "w"), indent=1)
PYEOF

echo "gpu_check: CUDA tests" >&2
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py | tee "$OUT/tests.txt"

if [ "$DEVICE" = cuda ] && [ -z "${QUICK:-}" ]; then
    SPEED=(--device cuda --configs A,B,dense8192 --repeats 3 --kernels torch)
    TRAIN=()
else
    SPEED=(--device "$DEVICE" --configs A,B --quick --repeats 1 --kernels torch,auto)
    TRAIN=(data.name=digits network.hidden=[200] network.j_density=1.0 network.w_in_density=1.0)
fi
echo "gpu_check: speed (${SPEED[*]})" >&2
PYTHONPATH=src "$PY" benchmarks/speed.py "${SPEED[@]}" --out "$OUT/speed.json" > "$OUT/speed.txt"

echo "gpu_check: one epoch of the default recipe on $DEVICE" >&2
rm -rf "$OUT/train"
"$PY" -m darnn train --quiet --device "$DEVICE" --out "$OUT/train" train.epochs=1 "${TRAIN[@]}" \
    | tee "$OUT/train.txt"

"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
metrics = [json.loads(l) for l in (out / "train" / "metrics.jsonl").read_text().splitlines()]
summary = {
    "device": json.loads((out / "device.json").read_text()),
    "tests": (out / "tests.txt").read_text().strip().splitlines()[-1:],
    "speed": json.loads((out / "speed.json").read_text()),
    "train_one_epoch": {k: metrics[-1][k] for k in ("test_acc", "val_acc", "train_time", "samples_per_s", "kernel", "eval_kernel") if k in metrics[-1]},
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
print(f"gpu_check: done; {out / 'gpu_check.json'}")
PYEOF
