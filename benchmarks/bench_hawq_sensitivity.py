"""Does HAWQ's predicted sensitivity rank layers the way the real loss does?

For every quantisable layer and bit width, compare HAWQ-V2's prediction
``tr(H) / n * ||Q_b(W) - W||^2`` (traces from the calibration batches, exactly as the
``hawq`` method computes them) with the measured loss increase when only that layer is
quantised, on held-out training batches. Prints the Spearman rank correlation per bit
width and the layers where the two disagree most. Usage:

    python benchmarks/bench_hawq_sensitivity.py --model EXPORTED_FOLDER --task glue:sst2 \
        --data-dir ../shared/data/glue [--choices 2 3 4 8] [--calib-batches 8] [--samples 16]
"""

from __future__ import annotations

import argparse
import random
import time


def main() -> None:
    from scipy.stats import spearmanr

    from suite.app.runner import prepare
    from suite.config import build_config
    from suite.methods.common.new_modules import not_adapted
    from suite.methods.quant import algorithms as A
    from suite.methods.quant import engine
    from suite.methods.quant.quantizers import Hawq
    from suite.recipe import Recipe
    from suite.registry import TASKS

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="glue:sst2")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--choices", type=int, nargs="+", default=[2, 3, 4, 8])
    ap.add_argument("--calib-batches", type=int, default=8)
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--group", type=int, default=128)
    args = ap.parse_args()

    task_name, _, sub = args.task.partition(":")
    task = TASKS.get(task_name).target(subtask=sub or None, data_dir=args.data_dir)
    recipe = Recipe(batch_size=16, max_length=128, limit=4000)
    prepared = prepare(task, args.model, recipe, "cpu", seed=0)
    bundle, items = prepared.bundle, prepared.train_data
    model = bundle.model.eval()
    chosen = random.Random(0).sample(items, (args.calib_batches + args.eval_batches) * recipe.batch_size)
    batches = [task.collate(chosen[i:i + recipe.batch_size], bundle)
               for i in range(0, len(chosen), recipe.batch_size)]
    calib, held_out = batches[:args.calib_batches], batches[args.calib_batches:]
    layers = engine.target_linears(model, not_adapted(model, prepared.ctx))

    start = time.perf_counter()
    hawq = Hawq(build_config(Hawq.Config, {"choices": tuple(args.choices), "group": args.group}, "hawq"))
    traces = A.layer_hessian_traces(model, layers, calib, args.samples, seed=0)
    predicted = hawq.sensitivities(layers, traces)
    print(f"traces: {time.perf_counter() - start:.0f} s for {len(layers)} layers", flush=True)
    measured = A.layer_loss_sensitivity(model, layers, held_out, hawq.quantized_weight, args.choices)
    print(f"{time.perf_counter() - start:.0f} s in all\n")

    print("| bits | Spearman(predicted, measured) over layers | layers whose measured loss rises |")
    print("|---|---|---|")
    for b in args.choices:
        p = [predicted[n][b] for n in layers]
        m = [measured[n][b] for n in layers]
        rho = spearmanr(p, m).statistic
        print(f"| {b} | {rho:+.3f} | {sum(x > 0 for x in m)} of {len(m)} |")
    worst = args.choices[0]
    ranked = sorted(layers, key=lambda n: measured[n][worst], reverse=True)
    by_prediction = sorted(layers, key=lambda n: predicted[n][worst], reverse=True)
    print(f"\nmost damaging layers at {worst} bits (measured rank / predicted rank, measured dL):")
    for name in ranked[:8]:
        print(f"  {name}: {ranked.index(name) + 1} / {by_prediction.index(name) + 1}, "
              f"{measured[name][worst]:+.4f}")


if __name__ == "__main__":
    main()
