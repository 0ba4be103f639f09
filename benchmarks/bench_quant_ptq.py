"""Post-training compression table: one fine-tuned model, every quantizer and pruner (and
their library peers), dev metric.

Evaluation only (no training after quantisation), with calibration batches from the task's
training split, so the rows differ only by the quantizer. Usage:

    python benchmarks/bench_quant_ptq.py --model EXPORTED_FOLDER --task glue:sst2 \
        --data-dir ../shared/data/glue [--methods fp32 rtn:bits=4 "hawq:choices=3;4;8" ...] [--limit N]

``suite run --models EXPORTED_FOLDER --max-steps 0 --methods ...`` runs the same cells into
the store; this script is the same evaluation without the store, for a quick table. Compare
``gptq`` with ``gptq:sequential=false`` to see what sequential calibration buys, ``gptq``
with ``llmc-gptq`` and ``smoothquant`` with ``llmc-smoothquant`` for llm-compressor's (a row
says why when a peer cannot run here), and ``sparsegpt`` / ``wanda`` / ``magnitude`` at
``sparsity=0.5`` and ``2:4``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

DEFAULT = ["fp32", "w8a8", "w8a8:format=fp8", "rtn:bits=8,group=0", "rtn:bits=4,group=128",
           "gptq:bits=4,group=128", "awq:bits=4,group=128", "smoothquant", "mxfp8", "mxfp4",
           "nvfp4", "nf4", "quarot:format=int4", "quarot:format=mxfp4", "hawq:budget=4",
           "rtn:format=fp6_e3m2,group=128", "rtn:format=mxfp5_e2m2", "llmc-gptq", "llmc-smoothquant",
           "torchao:config=intx-weight,bits=4,group=128", "torchao:config=int8-dyn-int8",
           "magnitude:sparsity=0.5", "wanda:sparsity=0.5", "sparsegpt:sparsity=0.5",
           "magnitude:sparsity=2:4", "wanda:sparsity=2:4", "sparsegpt:sparsity=2:4"]


def main() -> None:
    from suite.app.runner import apply_methods, prepare
    from suite.config import build_config, parse_kv
    from suite.method import MethodTarget
    from suite.models.loading import model_config
    from suite.recipe import Recipe
    from suite.registry import METHODS, TASKS

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="glue:sst2")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--methods", nargs="+", default=DEFAULT,
                    help="method specs, space-separated (list arguments keep ';': hawq:choices=3;4;8)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--calib-batches", type=int, default=8)
    args = ap.parse_args()

    task_name, _, sub = args.task.partition(":")
    task = TASKS.get(task_name).target(subtask=sub or None, data_dir=args.data_dir)
    recipe = Recipe(batch_size=16, max_length=128, limit=args.limit)
    rows = []
    config = model_config(args.model)
    target = MethodTarget(args.model, getattr(config, "model_type", "") or "", task.objective, config)
    refused = []
    for spec in args.methods:
        methods = []
        if spec != "fp32":
            name, _, raw = spec.partition(":")
            cls = METHODS.get(name).target
            methods = [cls(build_config(cls.Config, parse_kv(raw, name), name))]
            why = methods[0].unsupported(target)
            if why:  # refused before anything runs, as suite run does
                refused.append((spec, why))
                print(f"{spec:28s} refused: {why}", flush=True)
                continue
        # Calibration draws from the first 2,000 training examples; evaluation honours --limit.
        prepared = prepare(task, args.model, replace(recipe, limit=2000), "cpu", seed=0, methods=methods)
        start = time.perf_counter()
        apply_methods(prepared, methods)
        bundle = prepared.bundle
        for method in methods:  # what suite run does after the last (here: no) step
            bundle.model = method.after_training(bundle.model, prepared.ctx)
        measures = methods[0].measurements(bundle.model) if methods else {}
        bundle.model.eval()
        out = task.evaluate(bundle, recipe, "cpu")
        primary = next(m for m in out.metrics if m.is_primary)
        err = measures.get("quant_rel_error_mean", measures.get("prune_rel_error_mean", 0.0))
        rows.append((spec, primary.name, primary.value, measures.get("bits_per_weight", 32.0),
                     measures.get("sparsity", 0.0), measures.get("model_size_bytes", float("nan")),
                     err, time.perf_counter() - start))
        print(f"{spec:28s} {primary.name}={primary.value:.4f}", flush=True)
    base = rows[0][2] if rows and rows[0][0] == "fp32" else None
    print("\n| method | dev " + rows[0][1] + " | drop vs FP32 | bits/weight | sparsity | model MB | "
          "rel. weight error | time s |")
    print("|---|---|---|---|---|---|---|---|")
    for spec, _, value, bits, sparsity, size, err, secs in rows:
        drop = f"{100 * (value - base):+.2f} pt" if base is not None else ""
        mb = f"{size / 2**20:.1f}" if size == size else "-"
        print(f"| {spec} | {value:.4f} | {drop} | {bits:.2f} | {sparsity:.3f} | {mb} | {err:.4f} | {secs:.0f} |")
    for spec, why in refused:
        print(f"| {spec} | refused: {why} | | | | | | |")


if __name__ == "__main__":
    main()
