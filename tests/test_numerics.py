"""The shared numerics package: one Hadamard definition (dense and fast forms equal,
orthonormal, used by QuaRot's layer and by the Hadamard kernels' reference), and a core
package that depends on no plugin."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from suite.errors import UserError
from suite.numerics import formats as F
from suite.numerics.hadamard import (
    apply_block_hadamard,
    block_hadamard_matrix,
    fwht,
    hadamard_block_size,
    hadamard_matrix,
    hadamard_scale,
    random_signs,
)
from tests.conftest import REPO

# (last dimension, block): single blocks, several blocks, the kernels' sizes, block 1
SIZES = [(1, 1), (2, 2), (8, 8), (48, 16), (96, 32), (256, 128), (384, 128), (64, 1), (40, 8)]
TOL = {torch.float64: {"rtol": 1e-12, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


def _x(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _signs(n: int, seed: int = 1) -> torch.Tensor:
    return random_signs(n, torch.Generator().manual_seed(seed))


# -- dense and fast forms are one map ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,block", SIZES)
@pytest.mark.parametrize("signed", [False, True])
def test_dense_and_fast_forms_are_equal(dtype, n, block, signed):
    x = _x((5, n), dtype)
    s = _signs(n) if signed else None
    dense = apply_block_hadamard(x, block, signs=s, method="dense")
    fast = apply_block_hadamard(x, block, signs=s, method="fast")
    assert dense.dtype == fast.dtype == dtype
    torch.testing.assert_close(fast, dense, **TOL[dtype])
    # both equal x times the explicit block-diagonal matrix (built exactly in float64)
    m = block_hadamard_matrix(n, block, dtype=torch.float64, signs=s)
    torch.testing.assert_close(dense, (x.double() @ m).to(dtype), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,block", SIZES)
def test_butterflies_equal_the_sylvester_matrix_exactly(dtype, n, block):
    """Small integers: every sum is exact, so the unnormalised forms agree bit for bit."""
    x = torch.randint(-8, 9, (4, n), generator=torch.Generator().manual_seed(2)).to(dtype)
    h = hadamard_matrix(block, dtype=dtype, normalized=False)
    dense = (x.reshape(4, n // block, block) @ h).reshape(4, n)
    assert torch.equal(fwht(x, block), dense)


def test_fast_form_keeps_leading_dimensions_and_rows_independent():
    x = _x((2, 3, 64), torch.float32)
    out = apply_block_hadamard(x, 16, method="fast")
    assert torch.equal(out.reshape(6, 64), apply_block_hadamard(x.reshape(6, 64), 16, method="fast"))
    assert torch.equal(out[1, 2], apply_block_hadamard(x[1, 2:3], 16, method="fast")[0])


# -- orthonormality ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 4, 16, 32, 128, 256])
def test_hadamard_matrix_is_symmetric_and_orthonormal(n):
    h = hadamard_matrix(n, dtype=torch.float64)
    eye = torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close(h @ h.T, eye, rtol=0, atol=1e-12)
    assert torch.equal(h, h.T)
    raw = hadamard_matrix(n, dtype=torch.float64, normalized=False)
    assert torch.equal(raw.abs(), torch.ones(n, n, dtype=torch.float64))
    assert torch.equal(raw @ raw.T, n * eye)  # exact: entries +-1
    s = _signs(n)
    r = hadamard_matrix(n, dtype=torch.float64, signs=s)
    torch.testing.assert_close(r @ r.T, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(r, torch.diag(s.double()) @ h, rtol=0, atol=0)


@pytest.mark.parametrize("n,block", [(48, 16), (256, 128), (96, 32)])
def test_block_matrix_is_orthonormal(n, block):
    eye = torch.eye(n, dtype=torch.float64)
    for s in (None, _signs(n)):
        m = block_hadamard_matrix(n, block, dtype=torch.float64, signs=s)
        torch.testing.assert_close(m @ m.T, eye, rtol=0, atol=1e-12)
        torch.testing.assert_close(m.T @ m, eye, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", ["dense", "fast"])
@pytest.mark.parametrize("n,block", [(48, 16), (256, 128), (96, 32), (8, 8)])
def test_applying_twice_returns_the_input(dtype, method, n, block):
    x = _x((6, n), dtype)
    y = apply_block_hadamard(x, block, method=method)
    torch.testing.assert_close(apply_block_hadamard(y, block, method=method), x, **TOL[dtype])
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), **TOL[dtype])  # norms kept
    s = _signs(n)
    ys = apply_block_hadamard(x, block, signs=s, method=method)
    assert not torch.allclose(ys, y)
    back = apply_block_hadamard(ys, block, signs=s, inverse=True, method=method)
    torch.testing.assert_close(back, x, **TOL[dtype])


def test_signs_and_sizes_are_checked():
    x = torch.randn(2, 48)
    with pytest.raises(UserError, match="power of two"):
        apply_block_hadamard(x, 12)
    with pytest.raises(UserError, match="does not divide"):
        apply_block_hadamard(x, 32, method="fast")
    with pytest.raises(UserError, match="power-of-two size"):
        hadamard_matrix(12)
    with pytest.raises(UserError, match="vector of 48"):
        apply_block_hadamard(x, 16, signs=torch.ones(16))
    with pytest.raises(ValueError, match="unknown Hadamard method"):
        apply_block_hadamard(x, 16, method="slow")


def test_helpers():
    assert [hadamard_block_size(n) for n in (48, 64, 96, 7)] == [16, 64, 32, 1]
    assert hadamard_block_size(1024, max_block=128) == 128
    for h in (16, 32, 128):
        assert hadamard_scale(h) == float(torch.tensor(h ** -0.5, dtype=torch.float32))
    s = _signs(1000)
    assert set(s.tolist()) == {-1.0, 1.0} and torch.equal(s, _signs(1000))


# -- the users share this very definition ------------------------------------------------------
def test_quarot_layer_rotates_with_the_numerics_dense_form():
    from suite.methods.quant.layers import QuantLinear

    lin = nn.Linear(96, 8)
    w_rot = apply_block_hadamard(lin.weight.detach(), 32)
    layer = QuantLinear.from_linear(lin, w_rot, hadamard_block=32)
    for dtype in (torch.float32, torch.float64):
        x = _x((7, 96), dtype, seed=3)
        assert torch.equal(layer.transform_input(x), apply_block_hadamard(x, 32))
    torch.testing.assert_close(layer.effective_weight(), lin.weight.detach(), rtol=1e-5, atol=1e-6)


def test_quarot_method_rotates_weights_with_the_numerics_form():
    """The QuaRot method's quantised weight is the format applied to the numerics rotation."""
    from suite.config import build_config, parse_kv
    from suite.method import MethodContext
    from suite.methods.quant.layers import QuantLinear
    from suite.registry import METHODS
    from suite.task import ModelBundle

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
    weights = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]
    cls = METHODS.get("quarot").target
    method = cls(build_config(cls.Config, parse_kv("format=int8", "quarot"), "quarot"))
    ctx = MethodContext(device="cpu", dtype=torch.float32, seed=0, task_kind="classification",
                        calibration_source=None, bundle=ModelBundle(model, new_modules=(model[2],)))
    model = method.apply(model, ctx)
    layer = model[0]
    assert isinstance(layer, QuantLinear) and layer.hadamard_block == 64
    expected = F.fake_quantize(apply_block_hadamard(weights[0], 64), "int8", granularity="channel")
    assert torch.equal(layer.weight.detach(), expected)


def test_kernel_reference_is_the_numerics_fast_form():
    from suite.kernels.hadamard import hadamard_quantize_reference, hadamard_rotate

    x = _x((16, 256), torch.float32, seed=4).bfloat16()
    for h in (16, 32, 128):
        rotated = apply_block_hadamard(x.float(), h, method="fast")
        assert torch.equal(hadamard_rotate(x, h), rotated)
        ref = hadamard_quantize_reference(x, h, "mxfp4")
        q = F.quantize(rotated, "mxfp4")
        assert torch.equal(ref[0], q.data) and torch.equal(ref[1], q.scale)


def test_quarot_layer_and_kernel_reference_rotate_alike():
    """The same input through QuaRot's layer (dense form) and the kernel's reference (fast
    form): equal up to float32 rounding."""
    from suite.kernels.hadamard import hadamard_rotate
    from suite.methods.quant.layers import QuantLinear

    lin = nn.Linear(256, 4)
    layer = QuantLinear.from_linear(lin, apply_block_hadamard(lin.weight.detach(), 32), hadamard_block=32)
    x = _x((9, 256), torch.float32, seed=5)
    torch.testing.assert_close(layer.transform_input(x), hadamard_rotate(x, 32), rtol=1e-5, atol=1e-5)


def test_triton_kernel_matches_the_numerics_fast_form():
    pytest.importorskip("triton")
    from suite.kernels.hadamard import hadamard_quantize

    x = _x((4, 128), torch.float32, seed=6)
    out = hadamard_quantize(x, 32, "fp8")
    q = F.quantize(apply_block_hadamard(x, 32, method="fast"), "fp8_e4m3", granularity="row")
    assert torch.equal(out[0].view(torch.uint8), q.data.view(torch.uint8))
    assert torch.equal(out[1].reshape(-1), q.scale.reshape(-1))


# -- core, not a plugin -----------------------------------------------------------------------
def test_numerics_imports_no_plugin():
    code = ("import sys\nimport suite.numerics\nlight = 'torch' not in sys.modules\n"
            "import suite.numerics.formats, suite.numerics.elements, suite.numerics.rounding, "
            "suite.numerics.hadamard\n"
            "plugins = [m for m in sys.modules if m.startswith(('suite.methods', 'suite.kernels', "
            "'suite.tasks'))]\nprint(light, ','.join(plugins))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"], out.stdout
    for path in (REPO / "suite" / "numerics").glob("*.py"):
        text = path.read_text()
        for plugin in ("suite.methods", "suite.kernels", "suite.tasks"):
            assert f"import {plugin}" not in text and f"from {plugin}" not in text, path
