"""Kernel microbenchmarks for pytest-benchmark: the same regression gate, its own storage.

    pytest benchmarks/test_kernels_bench.py --benchmark-autosave            # record
    pytest benchmarks/test_kernels_bench.py --benchmark-compare \\
        --benchmark-compare-fail=median:10%                                  # gate

On a GPU every implementation that runs there is timed at the kernel's full shapes (the call
synchronises, so the wall clock sees the device work); on a CPU the CPU implementations at
the small shapes, single-threaded (a shared CI machine makes threads wait on each other).
Inputs rotate over several sets so the cache does not flatter small shapes. Filter with
``-k``, e.g. ``-k "mxfp4 and triton"``. ``suite bench kernels`` is the richer tool (in-run
roofline, normalised mode, noise-aware gate); this file gives pytest-benchmark users the
same kernels in their usual workflow.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from suite.registry import KERNELS

pytest.importorskip("pytest_benchmark")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
N_SETS = 4


def _cases():
    for name in KERNELS.names():
        kernel = KERNELS.get(name).target()
        for impl_name, impl in kernel.all_impls().items():
            if impl.unavailable_reason(DEVICE) or (DEVICE == "cpu" and not impl.default_on_cpu):
                continue
            if DEVICE == "cpu" and impl.needs == "triton":
                continue  # the interpreter is for correctness, not speed
            for shape in kernel.default_shapes(DEVICE)[:1]:
                yield pytest.param(name, impl_name, shape,
                                   id=f"{name}-{impl_name}-{'x'.join(map(str, shape))}")


@pytest.fixture(autouse=True)
def _single_thread_on_cpu():
    threads = torch.get_num_threads()
    if DEVICE == "cpu":
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name, impl_name, shape", list(_cases()))
def test_kernel(benchmark, name, impl_name, shape):
    kernel = KERNELS.get(name).target()
    impl = kernel.all_impls()[impl_name]
    dtype = kernel.dtypes[0]
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    sets = [kernel.make_inputs(shape, dtype, DEVICE, gen) for _ in range(N_SETS)]
    counter = itertools.count()

    def run():
        out = impl.fn(*sets[next(counter) % N_SETS])
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return out

    out = benchmark(run)
    if impl.checked and impl_name != "reference":
        # the call that produced `out` used some input set; check on the first one instead
        ok, _ = kernel.matches(impl.fn(*sets[0]), kernel.reference(*sets[0]), impl.exact)
        assert ok, f"{name}/{impl_name} does not match its reference"
    benchmark.extra_info.update({
        "kernel": name, "impl": impl_name, "shape": "x".join(map(str, shape)), "dtype": dtype,
        "bytes_moved": kernel.bytes_moved(shape, dtype), "flops": kernel.flops(shape, dtype),
        "device": DEVICE,
    })
    del out
