"""Training memory and throughput of S2FT, LoRA and full fine-tuning, side by side in one run.

Same model (a BERT built from a config), same batch, same AdamW step for every method.
Memory is reported two ways, because the CPU has no allocator statistics:

* ``state_mb`` (exact, any device): bytes of parameter gradients + AdamW states after a
  step, plus the activations autograd saved for the backward pass (counted through
  ``torch.autograd.graph.saved_tensors_hooks``, unique storages, weights and buffers
  excluded). This is the memory a method adds on top of the frozen weights.
* ``peak_mb``: ``suite.memory.PeakMemory`` over the steps: CUDA max-allocated on a GPU,
  sampled peak RSS of the process on the CPU (coarse: the allocator caches).

Throughput is training samples per second over the timed steps. Ratios are to full
fine-tuning. Exits non-zero if S2FT's exact training state is not below full fine-tuning's.

    python benchmarks/bench_s2ft_memory.py [--device cuda] [--hidden 256 --layers 4 --batch 16 --seq 128]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def build(hidden: int, layers: int, heads: int, seed: int) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, max_position_embeddings=512, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2)
    return BertForSequenceClassification(config)


def saved_activation_bytes(model: torch.nn.Module, batch: dict) -> int:
    """Bytes of the unique tensors autograd keeps for backward, excluding weights and buffers."""
    weights = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def measure(name: str, args: argparse.Namespace, batch: dict) -> dict[str, float]:
    from suite.config import build_config
    from suite.memory import PeakMemory
    from suite.method import MethodContext
    from suite.registry import METHODS

    cls = METHODS.get(name).target
    method = cls(build_config(cls.Config, {}, f"method '{name}'"))
    model = method.apply(build(args.hidden, args.layers, args.heads, 0), MethodContext(device=args.device))
    model.to(args.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    activations = saved_activation_bytes(model, batch)

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep grads allocated: they are part of the state

    step()  # warm-up, allocates optimizer states
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    with PeakMemory(args.device) as peak:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    states = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                 if torch.is_tensor(t) and t.ndim > 0)
    return {"trainable": float(sum(p.numel() for p in params)),
            "grads_mb": grads / 2**20, "optimizer_mb": states / 2**20, "activations_mb": activations / 2**20,
            "state_mb": (grads + states + activations) / 2**20, "peak_mb": peak.peak_bytes / 2**20,
            "peak_kind": peak.kind, "samples_per_s": args.steps * args.batch / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--methods", default="full,lora,s2ft")
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(5, 1000, (args.batch, args.seq), generator=generator),
             "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long),
             "labels": torch.randint(0, 2, (args.batch,), generator=generator)}
    batch = {k: v.to(args.device) for k, v in batch.items()}
    results = {name: measure(name, args, batch) for name in args.methods.split(",")}
    base = results.get("full")
    print(f"device {args.device}; BERT h={args.hidden} L={args.layers} heads={args.heads}; "
          f"batch {args.batch} x {args.seq}; {args.steps} timed steps; peak = {next(iter(results.values()))['peak_kind']}")
    header = ["method", "trainable", "grads MB", "optim MB", "saved act MB", "state MB", "state/full",
              "peak MB", "peak/full", "samples/s", "speed/full"]
    print("  ".join(f"{h:>12}" for h in header))
    for name, r in results.items():
        row = [name, f"{r['trainable']:,.0f}", f"{r['grads_mb']:.1f}", f"{r['optimizer_mb']:.1f}",
               f"{r['activations_mb']:.1f}", f"{r['state_mb']:.1f}",
               f"{r['state_mb'] / base['state_mb']:.3f}" if base else "-", f"{r['peak_mb']:.0f}",
               f"{r['peak_mb'] / base['peak_mb']:.3f}" if base else "-", f"{r['samples_per_s']:.1f}",
               f"{r['samples_per_s'] / base['samples_per_s']:.2f}" if base else "-"]
        print("  ".join(f"{c:>12}" for c in row))
    if base and "s2ft" in results and not results["s2ft"]["state_mb"] < base["state_mb"]:
        print("S2FT's training state is not below full fine-tuning's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
