"""Triton helpers shared by the kernels: grouped tile order, and launching with autotuning.

Autotuning (``triton.autotune``) runs on a CUDA device only. Under ``TRITON_INTERPRET=1``
(and on any device that is not CUDA) every kernel launches with the one fixed
configuration it always had, so CPU tests neither slow down nor change. On a GPU the
autotuner times each candidate the first time it sees a new key and keeps the fastest:

* quantise (``_quant_triton._quant_kernel``), three candidate sets by layout. Row-scaled
  FP8/INT8: the tile spans the whole row (BN = next_pow2(N), fixed by the caller); tuned
  over rows per program BM in {1, 2, 4, 8, 16} and num_warps 4/8 (6 configs, pruned to
  tiles of at most 16384 elements). Block formats (MX, NVFP4, INT4 groups, per-tensor
  FP8, fused Hadamard): [BM, BN] in {8..64} x {128, 256, 512}, num_warps 4/8 (6 configs).
  ``*_dual``: [BM, BN] in {64, 128}^2, num_warps 4/8 (6 configs). Keyed on M, N and the
  format, block size, rounding mode, Hadamard size, per-tensor scale and dual flag (and,
  as Triton always adds, the tensors' dtypes).
* dequantise (``_dequant_kernel``): the row and block sets above, keyed on M, N, format
  and block size.
* the amax pass (``_amax_kernel``): BLOCK in {4096, 8192, 16384}, num_warps 4/8 (4
  configs), keyed on numel and the Hadamard size.
* LoRA forward (``_lora_triton``): the main GEMM over 7 configs, [BM, BN, BK] from
  {64, 128, 256} x {64, 128, 256} x {64, 128}, num_warps 4/8, num_stages 3/4, GROUP_M 8,
  keyed on M, N, K, R and which variant (one kernel or the pair's kernel 2); the pair's
  kernel 1 (T = s x A^T) over 5 configs of BM in {32, 64, 128}, BK in {64, 128}, keyed on
  M, K, R.
* W4A16 GEMM (``_w4a16_triton``): [BM, BN] over 8 configs from {16..256} x {64, 128, 256}
  (BK is one INT4 group, 128, by construction), num_warps 4/8, num_stages 3/4, keyed on
  M, N, K; tiles taller than the padded M are pruned.

Correctness does not depend on the choice: the prune functions drop every configuration
whose tile would split a scale block (MX 32, NVFP4 16, INT4 128, a Hadamard block, both
axes for ``*_dual``, a whole row for row scales), so quantisers stay bit-exact under every
config; GEMMs differ only in accumulation order. ``tests/test_kernels_correctness.py``
checks the lists and runs the autotuned launch path in the interpreter (a stand-in timer,
every surviving candidate once); its GPU test checks the pick and every candidate pinned
at a full shape against the reference.

Shared memory: a configuration that needs more than the GPU has (228 KB per SM on Hopper,
227 KB per block) fails when its compiled kernel is loaded, with ``OutOfResources``
(``triton/compiler/compiler.py``, ``CompiledKernel._init_handles``); Triton 3.9's
``Autotuner._bench`` catches ``OutOfResources``, ``CompileTimeAssertionFailure`` and
``PTXASError`` and scores that config as infinitely slow, so it is skipped, never chosen
(as long as one config of the set fits: a LoRA rank of 128 is the tightest case).

Each set contains the fixed GPU configuration the kernel used before autotuning (only
per-tensor FP8 without ``dual`` used a 128x128 tile, outside the block set), so the tuner
can only trade it for a faster one. The candidate sets were chosen without a GPU, from
Hopper's limits and the usual Triton GEMM shapes: neither they nor the configurations the tuner picks are measured until
``bash kernels/measure_gpu.sh`` runs on an H100/H200. Tuning costs time on the first call
of every new key (compiles plus about 0.1 s of timing per config); the benchmark harness
makes that call before it starts timing (its correctness check and warm-up). Results
are not cached on disk (``cache_results`` is off): every process tunes afresh, so two
runs may pick different tiles where candidates time within noise of each other. Keys hold
exact sizes, so every new M (e.g. token count) is tuned again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import triton
import triton.language as tl

from suite.kernel import triton_interpreted

Prune = Callable[..., list]


@triton.jit
def grouped_tile(pid, M, N, BM: tl.constexpr, BN: tl.constexpr, GROUP_M: tl.constexpr):
    """Map a flat program id to a (tile row, tile column) in grouped launch order.

    Programs launched next to each other cover GROUP_M tile rows of the same tile columns,
    so they reuse the same weight tiles while those are still in L2. Pass an int64 ``pid``
    and the tile ids come back int64, so the callers' element offsets cannot wrap.
    """
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(N, BN)
    in_group = GROUP_M * num_pid_n
    first_m = (pid // in_group) * GROUP_M
    size_m = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % in_group) % size_m)
    pid_n = (pid % in_group) // size_m
    return pid_m, pid_n


def configs(names: Sequence[str], rows: Sequence[tuple]) -> list[triton.Config]:
    """``triton.Config`` per row: the values of ``names`` (meta-parameters), then
    num_warps and num_stages."""
    return [triton.Config(dict(zip(names, row[:len(names)], strict=True)),
                          num_warps=row[len(names)], num_stages=row[len(names) + 1])
            for row in rows]


def launch_kwargs(config: triton.Config) -> dict:
    """The keyword arguments a plain launch with ``config`` takes (tiles, warps, stages)."""
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


def autotuned(fn, candidates: list[triton.Config], key: list[str], prune: Prune | None = None,
              reset_to_zero: list[str] | None = None):
    """``triton.autotune`` of the jitted ``fn``; the plain kernel stays reachable as ``.fn``.

    ``prune(configs, named_args, **kwargs)`` must keep at least one config; every argument
    it reads has to be in ``key``, or a config chosen for one value would be reused for
    another it is invalid for.
    """
    # cache_results: the choice is kept on disk (Triton's cache, keyed on the kernel source,
    # the key values and the candidates), so `--save` and `--compare` runs of the regression
    # gate on one machine time the same tiles instead of re-tuning to a near-tie each time.
    return triton.autotune(configs=candidates, key=key, reset_to_zero=reset_to_zero,
                           prune_configs_by={"early_config_prune": prune} if prune else None,
                           cache_results=True)(fn)


def autotuning(device) -> bool:
    """True where launches go through the autotuner: a real CUDA device."""
    return getattr(device, "type", str(device)) == "cuda" and not triton_interpreted()


def launch(kernel, grid: Callable[[dict], tuple], fixed: dict, device, *args, **kwargs) -> None:
    """Launch an ``autotuned`` kernel: tuned on a CUDA device, else its plain jitted kernel
    with the ``fixed`` configuration (tile constexprs + num_warps/num_stages), the one it
    had before autotuning. A ``pinned`` config replaces both.

    ``grid`` maps the launch's meta-parameters (keyword arguments and config) to the grid,
    so it reads the tile sizes the tuner chose; the plain path evaluates it itself and
    launches a tuple (the interpreter tests patch launches that take one).
    """
    config = getattr(kernel, "pinned_config", None)
    if config is not None:
        fixed = {**fixed, **launch_kwargs(config)}
    elif autotuning(device):
        kernel[grid](*args, **kwargs)
        return
    kernel.fn[grid({**kwargs, **fixed})](*args, **kwargs, **fixed)


@contextlib.contextmanager
def pinned(kernel, config: triton.Config):
    """Launch the ``autotuned`` ``kernel`` with ``config`` alone, on any device (the tests
    run every candidate this way: in the interpreter, and on a GPU at full size)."""
    kernel.pinned_config = config
    try:
        yield
    finally:
        kernel.pinned_config = None


def keep(candidates: list, ok: Callable[[triton.Config], bool]) -> list:
    """The candidates that satisfy ``ok``; an empty result is a bug in the candidate set
    (the autotuner needs one), reported as such."""
    kept = [c for c in candidates if ok(c)]
    if not kept:
        raise RuntimeError("no autotune configuration fits this launch; the candidate set "
                           "in kernels/_tiling.py's users lacks a valid tile")
    return kept
