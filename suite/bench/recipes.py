"""Training-step time of the recipes with their kernels off and on, for the regression gate.

``suite bench recipes`` builds one small Llama, applies each recipe to its own copy exactly as a
cell applies it (the method spec, precision policy, optimizer), and times one
training step (forward, backward, optimizer) per round for every recipe x dispatch mode
(``suite.numerics.dispatch``: ``torch`` the kernels off, ``auto``/``triton`` on), interleaved with
the calibration op like the kernel benchmark (``suite.bench.timing.run_interleaved``). The rows go
to the same gate as the kernels' (``suite.bench.gate``: kernel ``recipe:<spec>``, impl
``kernels-<mode>``), so a slower recipe path (a kernel that stopped serving it, a slower kernel,
a slower reference) fails ``--compare`` on a GPU. The default recipes are those whose declared
operands a kernel serves (``suite.bench.methods``), so the list follows the recipes.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass, field

CPU_SIZE = "64,1,2,128"  # hidden, layers, heads, intermediate: a step in milliseconds on a CPU
GPU_SIZE = "4096,2,32,11008"  # GEMMs dominate the step (the size kernels/measure_gpu.sh measures)


@dataclass
class RecipeBenchOptions:
    recipes: list[str] | None = None  # None: every recipe a kernel serves, beside bf16-train
    modes: tuple[str, ...] = ("torch", "auto")
    size: str | None = None  # "hidden,layers,heads,intermediate"; None: CPU_SIZE / GPU_SIZE
    batch: int | None = None
    seq: int | None = None
    device: str | None = None
    rounds: int = 7
    warmup: int = 2
    calibration: bool = True


@dataclass
class RecipeBenchResult:
    rows: list[dict] = field(default_factory=list)  # printable: recipe, mode, step ms, kernel share
    samples: list[dict] = field(default_factory=list)  # the gate's rows (suite.bench.gate.KEY + samples)
    notes: list[str] = field(default_factory=list)
    device: str = ""
    shape: str = ""


def default_recipes() -> list[str]:
    from suite.bench.methods import kernel_methods

    _, found = kernel_methods()
    return ["bf16-train", *(mk.method for mk in found if mk.calls)]


def parse_size(text: str) -> tuple[int, int, int, int]:
    from suite.errors import UserError

    try:
        hidden, layers, heads, inter = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--size '{text}': give hidden,layers,heads,intermediate, e.g. {CPU_SIZE}") from None
    if min(hidden, layers, heads, inter) <= 0 or hidden % heads:
        raise UserError(f"--size '{text}': sizes must be positive and hidden a multiple of heads")
    return hidden, layers, heads, inter


def build_llama(size: str):
    """A randomly initialised Llama of ``size`` (seed 0), the template every recipe copies."""
    import torch
    from transformers import AutoModelForCausalLM

    from suite.models.catalog import LlamaSize, NamedModel

    entry = NamedModel(size, "llama", "", "bytes", "LlamaConfig", LlamaSize(*parse_size(size)).settings())
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(entry.make_config())


def prepare(spec: str, template, device: str) -> dict:
    """The model under one method spec, its optimizer and precision policy, as a cell sets them."""
    import torch

    from suite.bench.methods import instantiate
    from suite.method import MethodContext
    from suite.precision import FP32
    from suite.task import ModelBundle

    methods = instantiate(spec)
    model = copy.deepcopy(template).to(device)
    policy = FP32
    for m in methods:
        policy = m.precision_policy(policy)
    ctx = MethodContext(device=device, bundle=ModelBundle(model, new_modules=(model,)), precision=policy)
    for m in methods:
        model = m.apply(model, ctx)
    model.to(device).train()
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = None
    for m in methods:
        optimizer = optimizer or m.make_optimizer(model, groups, argparse.Namespace(lr=1e-4, optimizer="adamw"))
    optimizer = optimizer or torch.optim.AdamW(groups, lr=1e-4)
    return {"spec": spec, "model": model, "methods": methods, "policy": policy, "optimizer": optimizer}


def train_step(entry: dict, ids, device: str, mode: str) -> float:
    """One forward, backward and optimizer step with ``mode``'s kernels; returns the loss."""
    from suite.numerics import dispatch

    with dispatch.kernels(mode), entry["policy"].autocast(device):
        loss = entry["model"](input_ids=ids, labels=ids).loss
        loss.backward()
    entry["optimizer"].step()
    entry["optimizer"].zero_grad(set_to_none=True)
    return float(loss.detach())


def run_recipes(opts: RecipeBenchOptions, progress=None) -> RecipeBenchResult:
    import torch

    from suite.bench.harness import default_device, device_name
    from suite.bench.roofline import calibration_op
    from suite.bench.timing import Timer, run_interleaved
    from suite.numerics import dispatch
    from suite.registry import KERNELS

    device = opts.device or default_device()
    on_gpu = device.startswith("cuda")
    for mode in opts.modes:
        dispatch.check_mode(mode)
    KERNELS.names()  # the kernels register their implementations
    size = opts.size or (GPU_SIZE if on_gpu else CPU_SIZE)
    batch, seq = opts.batch or (4 if on_gpu else 1), opts.seq or (2048 if on_gpu else 32)
    res = RecipeBenchResult(device=device_name(device), shape=f"{size} b{batch}x{seq}")
    template = build_llama(size)
    ids = torch.randint(0, 256, (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
    cases, served = {}, {}
    for spec in opts.recipes or default_recipes():
        for mode in opts.modes:
            entry = prepare(spec, template, device)  # raises a UserError for an unknown recipe or argument
            label = (spec, mode)
            served[label] = {}

            def run(i: int, entry=entry, mode=mode, label=label) -> None:
                dispatch.reset_counts()
                train_step(entry, ids, device, mode)
                for k, n in dispatch.counts().items():
                    served[label][k] = served[label].get(k, 0) + n

            cases[label] = run
    if progress:
        progress(f"{len(cases)} recipe x mode cases, {opts.rounds} interleaved rounds on {res.device}")
    timer = Timer("cuda" if on_gpu else "cpu", clock="wall")
    samples, _ = run_interleaved(cases, calibration_op(device) if opts.calibration else None, timer,
                                 rounds=opts.rounds, warmup=opts.warmup, target_sample_s=0.0)
    for (spec, mode), s in samples.items():
        share = dispatch.kernel_fraction(served[(spec, mode)]) if served[(spec, mode)] else float("nan")
        res.rows.append({"recipe": spec, "kernels": mode, "step_ms": s.median * 1e3, "kernel_fraction": share,
                         "n_samples": len(s.times)})
        res.samples.append({"kernel": f"recipe:{spec}", "impl": f"kernels-{mode}", "shape": res.shape,
                            "dtype": "step", "samples_ms": [t * 1e3 for t in s.times],
                            "normalized_samples": list(s.normalized)})
    return res


def format_rows(rows: list[dict]) -> str:
    header = ["recipe", "kernels", "step ms", "format ops by a kernel"]
    body = [[r["recipe"], r["kernels"], f"{r['step_ms']:.4g}",
             "-" if r["kernel_fraction"] != r["kernel_fraction"] else f"{r['kernel_fraction']:.0%}"] for r in rows]
    widths = [max(len(str(x[i])) for x in [header] + body) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in [header] + body)
