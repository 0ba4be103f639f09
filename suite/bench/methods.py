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


def declared(recipe) -> list[tuple[str, object, tuple | None]]:
    """(label, operand, dispatch key or None) for each of a ``LinearRecipe``'s six operands (the
    key names the rotation where the operand's quantiser applies it: ``Gemm.dispatched``)."""
    out = []
    for gemm, side, name in OPERANDS:
        g = getattr(recipe, gemm)
        out.append((f"{gemm} {name}", getattr(g, side), g.dispatched(side)))
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
        _add_format_calls(out, [(label, op.describe(), call) for label, op, call in declared(recipe)
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
    (``format_calls``); GPTQ, AWQ and HAWQ compute their weights by their own algorithms and peer
    libraries' quantizers run their own code: neither declares."""
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


def markdown_methods(kernels: list[str] | None = None) -> str:
    """The same as ``format_methods``, as the Markdown section of kernels/RESULTS.md."""
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
    return "\n".join(lines) + "\n"
