#!/usr/bin/env bash
# Full GPU measurement of the kernels: correctness at full size, then the benchmark table.
# Run from the repository root on a machine with a Hopper GPU (H100/H200), then commit
# kernels/RESULTS.md and the parquet rows under kernels/results/:
#
#     bash kernels/measure_gpu.sh            # writes $OUT (default kernels/results) and RESULTS.md
#
# Nothing here changes the GPU's clocks or settings; it measures the card as it is. Every step is
# bounded (timeout) and non-fatal, most valuable first, so the whole script ends within 8 minutes
# (465 s of bounds) and a cut-off step still leaves the files of the steps before it.
set -euo pipefail
OUT="${OUT:-kernels/results}"
mkdir -p "$OUT"
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv | tee "$OUT/gpu.csv"
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
  | tee "$OUT/versions.txt"

# 1. correctness at full shapes (tests marked gpu), and fast emulation on CUDA: inductor's Triton code
#    for the recipes' quantisers equal to eager bit for bit (compiled.EAGER_NUMERICS)
timeout 85 python -m pytest tests/test_kernels_correctness.py tests/test_fast_emulation.py -q -m gpu 2>&1 \
  | tee "$OUT/correctness.txt" \
  || echo "correctness run failed or timed out" | tee -a "$OUT/correctness.txt"

# 2. FP8 vs BF16 training step time where GEMMs dominate (a 2-layer Llama of width 4096, 8192
#    tokens a step): fp8-train with real FP8 GEMMs (torch._scaled_mm), tensor and row scales,
#    beside torchao's float8 training, all as a ratio to bf16-train in one interleaved run.
#    Bounded (timeout) and non-fatal, so the kernel measurements below always run.
timeout 100 python benchmarks/bench_train_recipes.py --device cuda --size 4096,2,32,11008 --batch 4 --seq 2048 \
  --steps 10 --warmup 3 --recipes bf16-train,fp8-train,fp8-train:scaling=row,torchao-float8 \
  --json "$OUT/train_step.json" 2>&1 | tee "$OUT/train_step.txt" || echo "train step measurement failed" | tee -a "$OUT/train_step.txt"

# 2b. the recipes the kernels serve with their number-format operations in PyTorch and through the
#     Triton kernels (suite.numerics.dispatch, --kernels torch vs auto), same shape, interleaved;
#     nvfp4-train's and quartet-train's gradients round stochastically (the SR kernel); Quartet's and
#     NVFP4's rotations run inside their quantisers' kernel pass (rotate-and-quantise); halo-train's
#     INT8 GEMMs are real (torch._int_mm), its codes from the INT8 quantise kernel (in blocks of 128:
#     11008 has no full-size Hadamard).
timeout 80 python benchmarks/bench_train_recipes.py --device cuda --size 4096,2,32,11008 --batch 4 --seq 2048 \
  --steps 5 --warmup 2 --kernels torch,auto \
  --recipes bf16-train,mxfp8-train,mxfp4-train,nvfp4-train,quartet-train,fp8-train,halo-train:block=128 \
  --json "$OUT/train_step_kernels.json" 2>&1 | tee "$OUT/train_step_kernels.txt" \
  || echo "kernels on/off measurement failed" | tee -a "$OUT/train_step_kernels.txt"

# 3. benchmark every kernel x impl at its full shapes; rows go to the store, a baseline is saved
timeout 90 suite bench kernels --store "$OUT/store" --save "gpu-$(date +%Y%m%d)" 2>&1 | tee "$OUT/bench.txt" \
  || echo "kernel benchmark failed or timed out" | tee -a "$OUT/bench.txt"

# 4. the same run twice more, compared with the first (noise check of the gate on a GPU)
timeout 25 suite bench kernels --store "$OUT/store" --compare "gpu-$(date +%Y%m%d)" 2>&1 | tee "$OUT/gate.txt" || true

# 4b. the recipe half of the gate: a training step of each recipe the kernels serve (and bf16-train),
#     kernels off and on, saved as a recipe baseline, then a second run compared with it. CI on a GPU
#     runs `suite bench recipes --compare <baseline>` beside `suite bench kernels --compare <baseline>`.
timeout 60 suite bench recipes --store "$OUT/store" --save "gpu-$(date +%Y%m%d)" 2>&1 | tee "$OUT/recipes.txt" \
  || echo "recipe step measurement failed" | tee -a "$OUT/recipes.txt"
timeout 25 suite bench recipes --store "$OUT/store" --compare "gpu-$(date +%Y%m%d)" 2>&1 | tee "$OUT/recipes_gate.txt" || true

# 5. RESULTS.md from the stored rows (its hand-written blocks kept: the script writes the file itself,
#    as a redirect would empty it before it is read), with the training step times of step 2 appended
python kernels/render_results.py "$OUT/store" kernels/RESULTS.md
{ echo; echo "## FP8 vs BF16 training step (benchmarks/bench_train_recipes.py)"; echo; echo '```';
  cat "$OUT/train_step.txt"; echo '```';
  echo; echo "## Block-format recipes, kernels off and on (--kernels torch vs auto)"; echo; echo '```';
  cat "$OUT/train_step_kernels.txt"; echo '```';
  echo; echo "## Recipe gate (suite bench recipes --save, then --compare)"; echo; echo '```';
  cat "$OUT/recipes.txt" "$OUT/recipes_gate.txt"; echo '```'; } >> kernels/RESULTS.md
echo "wrote kernels/RESULTS.md"
