"""Overhead of the suite's training loop against a plain PyTorch + peft loop doing the same work.

Same model (LoRA via peft on a sequence classifier), same pre-tokenised data, same batch
size, sequence length, optimizer, schedule, clipping, data order and padding. The two
loops run alternately (A B A B ...) in one process, so machine noise hits both alike; the
report is the ratio of median throughputs (suite / plain). The target is >= 0.95.

    python benchmarks/bench_overhead.py --model tiny-bert --steps 60 --repeats 5
    python benchmarks/bench_overhead.py --model path/to/all-MiniLM-L6-v2 --steps 30 --max-length 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(model_name: str, max_length: int, limit: int):
    from suite.app.runner import apply_methods, prepare
    from suite.methods.peft.lora_family import Lora, LoraConfig
    from suite.recipe import Recipe
    from suite.tasks.smoke import SmokeTask

    task = SmokeTask()
    prepared = prepare(task, model_name, Recipe(limit=limit, max_length=max_length), "cpu", seed=0)
    apply_methods(prepared, [Lora(LoraConfig(r=8, alpha=16))])
    return task, prepared.bundle, prepared.train_data


def plain_loop(model, items, collate, steps: int, batch_size: int, lr: float, seed: int) -> float:
    """A minimal hand-written loop: what a researcher would write without the suite."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "norm" not in n.lower()]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and not (p.ndim >= 2 and "norm" not in n.lower())]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warmup = int(0.06 * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, 1 - (s - warmup) / max(1, steps - warmup)))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(items), generator=generator).tolist()
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        chunk = [items[i] for i in order[step * batch_size:(step + 1) * batch_size]]
        batch = collate(chunk)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def suite_loop(model, items, collate, steps: int, batch_size: int, lr: float, seed: int) -> float:
    from suite.recipe import Recipe
    from suite.train import Trainer

    recipe = Recipe(lr=lr, max_steps=steps, batch_size=batch_size, precision="fp32")
    trainer = Trainer(model, items, collate, recipe, methods=[], device="cpu", seed=seed, progress=False)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-bert")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task, bundle, items = build(args.model, args.max_length, limit=args.steps * args.batch_size)
    collate = lambda chunk: task.collate(chunk, bundle)  # noqa: E731
    initial = {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}
    samples = args.steps * args.batch_size
    rates: dict[str, list[float]] = {"plain": [], "suite": []}
    for repeat in range(args.repeats + 1):  # the first round warms up both paths and is dropped
        for name, loop in (("plain", plain_loop), ("suite", suite_loop)):
            bundle.model.load_state_dict(initial)
            seconds = loop(bundle.model, items, collate, args.steps, args.batch_size, 1e-3, seed=0)
            if repeat:
                rates[name].append(samples / seconds)
    plain, ours = statistics.median(rates["plain"]), statistics.median(rates["suite"])
    ratios = [s / p for s, p in zip(rates["suite"], rates["plain"], strict=True)]
    print(f"model={args.model} steps={args.steps} batch={args.batch_size} max_length={args.max_length} "
          f"threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"plain PyTorch+peft: {plain:8.1f} samples/s (median; all: {', '.join(f'{r:.1f}' for r in rates['plain'])})")
    print(f"suite Trainer     : {ours:8.1f} samples/s (median; all: {', '.join(f'{r:.1f}' for r in rates['suite'])})")
    print(f"ratio suite/plain : {ours / plain:.3f} (median of paired ratios {statistics.median(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
