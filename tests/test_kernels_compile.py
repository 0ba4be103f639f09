"""Every Triton kernel, and every kernel launch of the recipes, compiles for a Hopper GPU (sm_90).

The interpreter tests prove the kernels' arithmetic; only Triton's compiler says whether a GPU can
run them. ``suite.kernels.compile_check`` sends each launch through the NVIDIA backend down to the
cubin without a device (``ptxas`` comes with Triton). It runs in a subprocess: the other test modules
set ``TRITON_INTERPRET=1``, and Triton reads it when a kernel is defined.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], tmp_path: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # compiled here, not found in a cache
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_every_kernel_and_every_recipe_launch_compiles_for_sm90(tmp_path):
    from suite.registry import KERNELS

    out = tmp_path / "report.json"
    # --no-candidates: the autotuner's other tiles (a few minutes more to compile) are left to the
    # full command; a GPU's tuner skips a candidate that fails to compile
    done = _run(["-m", "suite.kernels.compile_check", "--arch", "90", "--no-candidates", "--json", str(out)],
                tmp_path)
    assert out.exists(), done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"], "\n".join(report["failures"])
    with_triton = [n for n in KERNELS.names() if "triton" in KERNELS.get(n).target().all_impls()]
    assert sorted(report["kernels"]) == sorted(with_triton)
    assert all(report["kernels"][n] for n in with_triton), report["kernels"]  # each launched and compiled
    assert all(report["recipes"].values()), report["recipes"]  # each recipe's operations reached a kernel
    assert "_fp4_fake_kernel" in report["recipes"]["quartet-train"]  # rotate + stochastic round, one pass
    assert done.returncode == 0


def test_the_compile_check_refuses_what_only_the_interpreter_takes(tmp_path):
    """A kernel reading a module global that is not a ``tl.constexpr`` runs in the interpreter but
    does not compile (the bug the quantise kernels had): the check must say so, and must compile
    the same kernel with the global declared ``tl.constexpr``."""
    (tmp_path / "globals_kernels.py").write_text(textwrap.dedent('''
        import triton
        import triton.language as tl

        PLAIN = 2
        DECLARED = tl.constexpr(2)


        @triton.jit
        def reads_plain(x_ptr, MODE: tl.constexpr):
            if MODE == PLAIN:
                tl.store(x_ptr, 1.0)


        @triton.jit
        def reads_declared(x_ptr, MODE: tl.constexpr):
            if MODE == DECLARED:
                tl.store(x_ptr, 1.0)
    '''))
    (tmp_path / "drive.py").write_text(textwrap.dedent('''
        import torch

        from suite.kernels.compile_check import compile_only_launches

        seen = compile_only_launches(90)
        import globals_kernels as k

        x = torch.zeros(1)
        k.reads_declared[(1,)](x, MODE=2)
        print("declared compiled", len(seen))
        try:
            k.reads_plain[(1,)](x, MODE=2)
        except Exception as exc:
            print("plain refused:", type(exc).__name__, "constexpr" in str(exc))
        else:
            print("plain compiled")
    '''))
    done = _run(["drive.py"], tmp_path, timeout=300)
    assert "declared compiled 1" in done.stdout, done.stderr[-3000:]
    assert "plain refused: CompilationError True" in done.stdout, done.stdout + done.stderr[-3000:]
