"""Which methods run which benchmark kernel: the methods' declared format operations through the
dispatch registry, never a hand-kept table.

Each registered training recipe (kind ``train``) declares, per GEMM operand, its format, scaling and
rounding (``LinearRecipe``); ``Operand.dispatched()`` names the ``suite.numerics.dispatch`` call that
quantises it (or None where PyTorch alone does). A quantizer or QAT method (kind ``quant``) that
declares ``format_calls(k)`` (its weight and activation formats for a layer of ``k`` inputs, with the
dispatch call of each or None) is listed too, at ``LISTED_IN_FEATURES`` inputs. Each registered
implementation's ``timed_by`` names the benchmark kernels that time a call. Put together: kernel ->
the methods that run it, and per method the operations no kernel serves (the gaps the kernel table
states). Tests run each recipe a step, and each quantizer and QAT method its apply and a forward,
under dispatch counting and hold the declared calls to the ones made (``tests/test_kernel_methods.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

NOT_QUANTISED = ("fp32", "bf16")
# The layer width (inputs) a quantizer's declaration is listed at: group sizes that divide it are kept,
# as in a large model (a tiny test model's layers may fall back to one scale per row).
LISTED_IN_FEATURES = 4096
OPERANDS = (("forward", "a", "X"), ("forward", "b", "W"), ("dgrad", "a", "dY"), ("dgrad", "b", "W"),
            ("wgrad", "a", "dY"), ("wgrad", "b", "X"))


@dataclass
class MethodKernels:
    """One method (its default configuration): the dispatch calls its operands (a training recipe) or
    its weights and activations (a quantizer, QAT) make, the benchmark kernels that time them, and
    what no kernel serves."""

    method: str
    kind: str = "train"  # or "quant": a quantizer or QAT method declaring format_calls
    calls: dict[tuple, list[str]] = field(default_factory=dict)  # dispatch key -> operands ("fwd X", ...)
    kernels: dict[tuple, tuple[str, ...]] = field(default_factory=dict)  # dispatch key -> benchmark kernels
    gaps: list[str] = field(default_factory=list)  # "dgrad dY: MXFP4 QuEST ... (PyTorch)"
    linear: bool = True  # False: the method declares no GEMM operands (a peer library's recipe)


# The dispatch call that makes the INT8 codes of a real integer GEMM (``LayerState.quantize``)
INT8_CODES_CALL = ("quantize_codes", "int8", "granularity=tensor")


def declared(recipe, real_int8: bool = False) -> list[tuple[str, object, tuple | None]]:
    """(label, operand, dispatch key or None) for each of a ``LinearRecipe``'s six operands (the
    key names the rotation where the operand's quantiser applies it: ``Gemm.dispatched``).
    ``real_int8``: the method multiplies INT8 codes in an integer GEMM where both operands allow it
    (``Gemm.int8_product``); those operands are coded by ``quantize_codes``."""
    out = []
    for gemm, side, name in OPERANDS:
        g = getattr(recipe, gemm)
        out.append((f"{gemm} {name}", getattr(g, side), INT8_CODES_CALL if real_int8 and g.int8_product
                    else g.dispatched(side)))
    return out


def timed_by(call: tuple) -> tuple[str, ...]:
    """The benchmark kernels of every registered implementation of ``call``'s operation."""
    from suite.numerics import dispatch

    names: list[str] = []
    for impl in dispatch.registered(call[0]):
        if impl.timed_by is not None:
            names += [n for n in impl.timed_by(*call[1:]) if n not in names]
    return tuple(names)


def instantiate(spec: str) -> list:
    """The method instances of a spec ``name[:key=value,...][+name...]``, built as ``suite run``
    builds them (the registry's class, its Config validated by ``suite.config``); an unknown name
    or argument is a UserError."""
    from suite.config import build_config, parse_kv
    from suite.errors import UserError
    from suite.registry import METHODS

    out = []
    for piece in spec.split("+"):
        name, _, arg_text = piece.strip().partition(":")
        if not name.strip():
            raise UserError(f"method spec '{spec}': an empty method name")
        cls = METHODS.get(name.strip()).target
        args = parse_kv(arg_text, f"method '{name}'") if arg_text else {}
        out.append(cls(build_config(cls.Config, args, f"method '{name}'")))
    return out


def _add_format_calls(out: MethodKernels, calls: list[tuple[str, str, tuple | None]]) -> None:
    """A method's declared format operations, (label, description, dispatch key or None), into ``out``:
    the calls and their benchmark kernels, and as gaps those no kernel serves."""
    missing: dict[str, list[str]] = {}
    for label, what, call in calls:
        if call is None:
            missing.setdefault(what, []).append(label)
            continue
        out.calls.setdefault(call, []).append(label)
        out.kernels[call] = timed_by(call)
        if not out.kernels[call]:
            out.gaps.append(f"{label}: {what} (dispatched as {'/'.join(call)}, no kernel takes it)")
    out.gaps += [f"{what} ({', '.join(labels)})" for what, labels in missing.items()]


def method_kernels(spec: str) -> MethodKernels:
    """The calls and kernels of one method spec (``nvfp4-train``, ``mxfp4-train:scale=rceil``,
    ``qat:format=mxfp4,backend=suite``)."""
    out = MethodKernels(spec)
    for method in instantiate(spec):
        declared_calls = method.format_calls(LISTED_IN_FEATURES) if hasattr(method, "format_calls") else None
        if declared_calls is not None:
            out.kind = "quant"
            _add_format_calls(out, declared_calls)
            continue
        recipe = method.linear_recipe() if hasattr(method, "linear_recipe") else None
        if recipe is None or not hasattr(recipe, "forward"):
            out.linear = False
            continue
        real_int8 = getattr(getattr(method, "config", None), "real", "false") != "false"
        _add_format_calls(out, [(label, op.describe(), call) for label, op, call in declared(recipe, real_int8)
                                if op.fmt not in NOT_QUANTISED])
        rotations: dict[str, list[str]] = {}
        for gemm in ("forward", "dgrad", "wgrad"):
            g = getattr(recipe, gemm)
            for size, where in ((g.hadamard, "contraction"), (g.outer_hadamard, "rows of dY")):
                if size and not (where == "contraction" and g.fused_rotation()):  # else its quantisers rotate
                    what = f"{'full-size' if size < 0 else f'{size}-point'} Hadamard along the {where}"
                    rotations.setdefault(what, []).append(gemm)
        out.gaps += [f"{what} ({', '.join(gemms)})" for what, gemms in rotations.items()]
    return out


def train_methods() -> list[str]:
    from suite.registry import METHODS

    return [e.name for e in METHODS.entries() if e.kind == "train"]


def quant_methods() -> list[str]:
    """The quantizers and QAT methods whose default configuration declares its format operations
    (``format_calls``); GPTQ computes its weights by its own algorithm (error feedback, column by
    column) and peer libraries' quantizers run their own code: neither declares."""
    from suite.registry import METHODS

    out = []
    for e in METHODS.entries():
        if e.kind == "quant" and hasattr(e.target, "format_calls"):
            (method,) = instantiate(e.name)
            if method.format_calls(LISTED_IN_FEATURES) is not None:
                out.append(e.name)
    return out


def kernel_methods(methods: list[str] | None = None) -> tuple[dict[str, list[str]], list[MethodKernels]]:
    """(benchmark kernel -> the methods that run it, each method's ``MethodKernels``)."""
    from suite.registry import KERNELS

    KERNELS.names()  # the kernel plugins register their implementations when they load
    found = [method_kernels(m) for m in (train_methods() + quant_methods() if methods is None else methods)]
    by_kernel: dict[str, list[str]] = {}
    for mk in found:
        for names in mk.kernels.values():
            for name in names:
                if mk.method not in by_kernel.setdefault(name, []):
                    by_kernel[name].append(mk.method)
    return by_kernel, found


def format_methods(kernels: list[str], by_kernel: dict[str, list[str]], found: list[MethodKernels]) -> str:
    """The text ``suite bench kernels`` prints after its table: who runs each kernel, and the gaps."""
    lines = ["methods that run each kernel (the recipes' declared operands, the quantizers' and QAT's declared "
             "formats, through suite.numerics.dispatch):"]
    width = max([len(k) for k in kernels] or [0])
    for k in kernels:
        lines.append(f"  {k:{width}s}  {', '.join(by_kernel.get(k, [])) or '- (no method dispatches to it)'}")
    gaps = [mk for mk in found if mk.gaps or not mk.linear]
    if gaps:
        lines.append("operations of the methods that no kernel serves (they run in PyTorch):")
        for mk in gaps:
            if not mk.linear:
                lines.append(f"  {mk.method}: a peer library's recipe (its own kernels)")
                continue
            lines.append(f"  {mk.method}: " + "; ".join(mk.gaps))
    return "\n".join(lines)


# Configurations off the defaults that a kernel serves, listed with the kernels they run (derived) and
# what differs about their path.
OFF_DEFAULT = (
    ("fp8-train:scaling=delayed", "FP8 per tensor with the largest amax of earlier steps: the quantise kernel "
     "takes that scale (no amax pass), then the row dequantise kernel runs; on the emulated path only (real "
     "FP8 keeps PyTorch's cast, whose codes `torch._scaled_mm` takes)"),
    ("mxfp4-train:scale=rceil", "MX scales rounded up (RCEIL)"),
    ("halo-train:real=false", "INT8 per tensor, emulated: the quantise and dequantise kernels, then an FP32 "
     "product (by default the quantise kernel alone makes HALO's INT8 codes, which the real integer GEMM "
     "`torch._int_mm` multiplies, on CPUs and CUDA GPUs)"),
    ("awq:sym=true", "Symmetric INT4 groups: the candidates of its scale search and its final weights"),
)

# Why the kernels serve what they serve and why the gaps have none: the design, not a measurement. Each
# kernel named here is a registered benchmark kernel (tests/test_kernel_methods.py checks the names).
NOTES = (
    "QuEST's forward scale and clip mask (quartet-train) and the block rotations of Quartet (32-point, "
    "re-randomised signs in the backward) and of NVFP4's weight gradient (16-point random-sign RHT) run in one "
    "pass with their quantiser: `fake_quantize_mxfp4_quest_h32`, `fake_quantize_mxfp4_sr34_h32`, "
    "`fake_quantize_nvfp4_sr_h16`, `fake_quantize_nvfp4_h16` (the dispatched operations take "
    "`hadamard=<points>` and the signs; their references rotate with the butterflies of "
    "`suite.numerics.hadamard.rotate_blocks`, which the kernel repeats, so they are equal bit for bit).",
    "Stochastic rounding makes its uniforms in the kernel from the element's index and a per-call key "
    "(`suite.numerics.counter_rng`: lowbias32 of the counter, the same bits as the PyTorch reference), so the "
    "`fake_quantize_*_sr*` kernels read X and write Y, nothing else.",
    "HALO's full-size rotations (up to the model width along the contraction, and along the tokens of dY) run "
    "in PyTorch before the quantiser: a size the tile does not hold (over 128 points, or a Kronecker "
    "`H_k x H_2^m` of HALO's non-power-of-two widths) has no kernel here.",
    "Quantizers and QAT call the same dispatched `fake_quantize` (`suite.methods.quant.layers.fake_quantize`): "
    "a quantizer's weight once when it applies (AWQ: each candidate of its scale search too; HAWQ: each bit "
    "width it may choose, then the chosen one), activations at every forward, QAT's weights at every forward "
    "and at conversion. Kernels take FP8 and INT8 with a scale per tensor or row, MXFP4, MXFP8, NVFP4 and "
    "symmetric INT4 in groups of 128 (`quantize_int4_group` then `dequantize_int4_group`); other integer "
    "widths, groups and rows, asymmetric integers (AWQ's default), MXFP6, NF4 and L4Q's learned step sizes "
    "have none. GPTQ is not listed: its error feedback quantises column by column inside its own algorithm, "
    "with no format operation to dispatch; peer libraries' quantizers run their own code.",
    "`qat`'s default (symmetric INT4 in groups of 128, `backend=auto`) runs torchao's QAT fake quantisation "
    "where torchao is installed and the INT4 group kernels without it; both paths are listed, so this file "
    "does not depend on the environment that renders it (`backend=suite` always takes the kernels).",
)


def markdown_methods(kernels: list[str] | None = None) -> str:
    """The same as ``format_methods``, as the Markdown sections of kernels/RESULTS.md: who runs each
    kernel, what no kernel serves, the configurations off the defaults that a kernel serves, and why
    (``NOTES``), so a GPU render writes them from this one place."""
    from suite.registry import KERNELS

    by_kernel, found = kernel_methods()
    kernels = sorted(KERNELS.names()) if kernels is None else kernels
    lines = ["## Which methods run each kernel", "",
             "Derived from the training recipes' declared operands (`Operand.dispatched`), the quantizers' and "
             "QAT methods' declared weight and activation formats (`format_calls`, at a layer of "
             f"{LISTED_IN_FEATURES} inputs) and the kernels registered with `suite.numerics.dispatch` "
             "(`suite.bench.methods`; `suite bench kernels` prints the same after its table), for each "
             "method's default configuration.", "",
             "| kernel | methods that run it |", "|---|---|"]
    lines += [f"| {k} | {', '.join(by_kernel.get(k, [])) or '-'} |" for k in kernels]
    lines += ["", "## What no kernel serves yet", "",
              "Operations of the methods that run in PyTorch whatever `--kernels` says: the missing kernels.", ""]
    for mk in found:
        if not mk.linear:
            lines.append(f"- **{mk.method}**: a peer library's recipe (its own kernels)")
        elif mk.gaps:
            lines.append(f"- **{mk.method}**: " + "; ".join(mk.gaps))
    lines += ["", "## Off the default configurations", "",
              "Configurations a kernel serves that the defaults above do not run, with the kernels they run:", ""]
    for spec, what in OFF_DEFAULT:
        names = [n for names in method_kernels(spec).kernels.values() for n in names]
        lines.append(f"- `{spec}`: {', '.join(f'`{n}`' for n in dict.fromkeys(names)) or 'no kernel'}. {what}.")
    lines += ["", "## What the kernels serve, and why the remaining gaps have no kernel yet", ""]
    lines += [f"- {note}" for note in NOTES]
    return "\n".join(lines) + "\n"
