#!/usr/bin/env bash
# Full GPU measurement of the kernels: correctness at full size, then the benchmark table.
# Run from the repository root on a machine with a Hopper GPU (H100/H200), then commit
# kernels/RESULTS.md and the parquet rows under kernels/results/:
#
#     bash kernels/measure_gpu.sh            # writes $OUT (default kernels/results) and RESULTS.md
#
# Nothing here changes the GPU's clocks or settings; it measures the card as it is.
set -euo pipefail
OUT="${OUT:-kernels/results}"
mkdir -p "$OUT"
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv | tee "$OUT/gpu.csv"
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
  | tee "$OUT/versions.txt"

# 1. correctness at full shapes (tests marked gpu)
python -m pytest tests/test_kernels_correctness.py -q -m gpu 2>&1 | tee "$OUT/correctness.txt"

# 2. benchmark every kernel x impl at its full shapes; rows go to the store, a baseline is saved
suite bench kernels --store "$OUT/store" --save "gpu-$(date +%Y%m%d)" 2>&1 | tee "$OUT/bench.txt"

# 3. the same run twice more, compared with the first (noise check of the gate on a GPU)
suite bench kernels --store "$OUT/store" --compare "gpu-$(date +%Y%m%d)" 2>&1 | tee "$OUT/gate.txt" || true

# 4. RESULTS.md from the stored rows
python kernels/render_results.py "$OUT/store" > kernels/RESULTS.md
echo "wrote kernels/RESULTS.md"
