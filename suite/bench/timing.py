"""Timing primitives: one sample of a callable, on a GPU with device events, on a CPU with a clock.

A *sample* is the mean time of ``inner`` back-to-back calls, each on the next input set in
rotation (so a small working set cannot sit in the cache and flatter the number). Short
operations get more calls per sample, so that the timer's resolution and the launch of the
events stay far under the time measured.

On a CPU the clock is the calling thread's CPU time (``time.thread_time``) when torch runs
single-threaded, as the harness arranges: ops then run inline on this thread, and the clock
leaves out the slices the OS gives to other processes, which on a shared 2-core CI machine
are most of the noise. ``clock="wall"`` uses ``time.perf_counter`` instead.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Timer:
    """Times ``inner`` calls of ``fn(i)`` (i = call index, for input rotation) on one device."""

    device_type: str = "cpu"
    clock: str = "auto"  # CPU only: "auto" (thread CPU time when single-threaded) | "wall" | "thread"

    def _cpu_clock(self):
        clock = self.clock
        if clock == "auto":
            import torch

            clock = "thread" if torch.get_num_threads() == 1 else "wall"
        return time.thread_time if clock == "thread" else time.perf_counter

    def sync(self) -> None:
        if self.device_type == "cuda":
            import torch

            torch.cuda.synchronize()

    def sample(self, fn: Callable[[int], object], inner: int, start: int = 0) -> float:
        """Seconds per call, averaged over ``inner`` calls starting at rotation index ``start``."""
        if self.device_type == "cuda":
            import torch

            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            for i in range(inner):
                fn(start + i)
            end.record()
            end.synchronize()
            return begin.elapsed_time(end) / 1e3 / inner
        now = self._cpu_clock()
        t0 = now()
        for i in range(inner):
            fn(start + i)
        return (now() - t0) / inner

    def calibrate_inner(self, fn: Callable[[int], object], target_s: float, max_inner: int = 1000) -> int:
        """How many calls one sample needs to last about ``target_s`` (after one warm call)."""
        fn(0)
        self.sync()
        once = self.sample(fn, 1)
        if once <= 0:
            return max_inner
        return int(max(1, min(max_inner, math.ceil(target_s / once))))


@dataclass
class Samples:
    """Per-sample times (seconds) of one case, and the same divided by the calibration op."""

    times: list[float] = field(default_factory=list)
    normalized: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def normalized_median(self) -> float:
        return statistics.median(self.normalized) if self.normalized else float("nan")


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (q in [0, 1]) without numpy, for small sample lists."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def run_interleaved(
    cases: dict[str, Callable[[int], object]],
    calibration: Callable[[int], object] | None,
    timer: Timer,
    *,
    rounds: int,
    warmup: int,
    target_sample_s: float,
) -> tuple[dict[str, Samples], list[float]]:
    """Time every case ``rounds`` times, round-robin, with the calibration op in every round.

    Interleaving means a burst of load from elsewhere on the machine hits all cases and the
    calibration op alike, and normalising each sample by its own round's calibration time
    cancels most of it: the property the regression gate relies on, on a noisy CI machine.
    """
    all_cases = dict(cases)
    if calibration is not None:
        all_cases["__calibration__"] = calibration
    inner = {}
    for name, fn in all_cases.items():
        for i in range(warmup):
            fn(i)
        timer.sync()
        inner[name] = timer.calibrate_inner(fn, target_sample_s)
    out = {name: Samples() for name in cases}
    calib_times: list[float] = []
    counter = 0
    for _ in range(rounds):
        round_times = {}
        for name, fn in all_cases.items():
            round_times[name] = timer.sample(fn, inner[name], start=counter)
            counter += inner[name]
        calib = round_times.pop("__calibration__", None)
        if calib is not None:
            calib_times.append(calib)
        for name, t in round_times.items():
            out[name].times.append(t)
            if calib:
                out[name].normalized.append(t / calib)
    return out, calib_times
