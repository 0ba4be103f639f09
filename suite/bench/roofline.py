"""The roofline measured in the same run, and the calibration op of the normalised mode.

Datasheet numbers are not what a given card delivers today; the roof every timing is read
against is measured here, on the same device, in the same process: a large device-to-device
copy (bytes read + bytes written) for bandwidth, a large matrix product for compute (bf16 on
a GPU; on a CPU the faster of float32 and bf16, which some CPUs run natively).
"""

from __future__ import annotations

from dataclasses import dataclass

from suite.bench.timing import Timer, run_interleaved


@dataclass(frozen=True)
class Roofline:
    peak_gbps: float
    peak_tflops: float
    copy_bytes: int
    matmul_n: int
    matmul_dtype: str


def _sizes(device_type: str, quick: bool) -> tuple[int, int]:
    """(copy elements of float32, matmul size n) large enough to fill the device."""
    if device_type == "cuda":
        return (1 << 28, 8192)  # 1 GiB read + 1 GiB written; 8192^3 bf16
    return ((1 << 22, 512) if quick else (1 << 24, 1024))


def measure_roofline(device: str, quick: bool = False, rounds: int = 5) -> Roofline:
    """Measure the achievable bandwidth and matrix rate of ``device`` (median of ``rounds``)."""
    import torch

    device_type = torch.device(device).type
    n_copy, n_mm = _sizes(device_type, quick)
    timer = Timer(device_type)
    src = torch.rand(n_copy, device=device, dtype=torch.float32) + 0.5
    dst = torch.empty_like(src)
    # A CPU may run bf16 faster than float32 (AMX, AVX512-BF16): the faster is its roof.
    mm_dtypes = [torch.bfloat16] if device_type == "cuda" else [torch.float32, torch.bfloat16]
    cases = {"copy": lambda i: dst.copy_(src)}
    for dt in mm_dtypes:
        a = (torch.rand(n_mm, n_mm, device=device) - 0.5).to(dt)
        b = (torch.rand(n_mm, n_mm, device=device) - 0.5).to(dt)
        c = torch.empty(n_mm, n_mm, device=device, dtype=dt)
        cases[str(dt).removeprefix("torch.")] = lambda i, a=a, b=b, c=c: torch.mm(a, b, out=c)
    target = 0.02 if device_type == "cuda" else 0.01
    samples, _ = run_interleaved(cases, None, timer, rounds=rounds, warmup=2, target_sample_s=target)
    copy_s = samples.pop("copy").median
    mm_dtype, mm = min(samples.items(), key=lambda kv: kv[1].median)
    mm_s = mm.median
    copy_bytes = 2 * src.numel() * src.element_size()
    return Roofline(
        peak_gbps=copy_bytes / copy_s / 1e9,
        peak_tflops=2 * n_mm**3 / mm_s / 1e12,
        copy_bytes=copy_bytes,
        matmul_n=n_mm,
        matmul_dtype=mm_dtype,
    )


def calibration_op(device: str):
    """A fixed mix of memory and compute work whose time every sample is divided by.

    Half streaming copy, half small matmul: kernels are either memory- or compute-bound, and
    a machine that got slower in one of the two moves the calibration time along with them.
    """
    import torch

    device_type = torch.device(device).type
    n_copy, n_mm = ((1 << 24, 2048) if device_type == "cuda" else (1 << 18, 128))
    src = torch.rand(n_copy, device=device) + 0.5
    dst = torch.empty_like(src)
    a = torch.rand(n_mm, n_mm, device=device) - 0.5
    b = torch.rand(n_mm, n_mm, device=device) - 0.5
    c = torch.empty_like(a)

    def run(i: int) -> None:
        dst.copy_(src)
        torch.mm(a, b, out=c)

    return run
