"""Gradient clipping against torch.nn.utils.clip_grad_norm_ / clip_grad_value_."""
import math

import numpy as np
import pytest

from pyrnn import clip_grad_norm, clip_grad_value
from pyrnn.clip import grad_norm
from pyrnn.nn import Linear, Sequential
from _oracle import require_torch


def _grads(seed, scale, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in [(4, 3), (4,), (2, 5)]]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
@pytest.mark.parametrize("scale,max_norm", [(1.0, 0.5), (0.25, 1.0), (0.01, 5.0), (1.0, 0.0)])
def test_clip_grad_norm_matches_torch(norm_type, scale, max_norm):
    torch = require_torch()
    gs = _grads(0, scale)
    ts = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in gs]
    for t, g in zip(ts, gs):
        t.grad = torch.tensor(g)
    expected = torch.nn.utils.clip_grad_norm_(ts, max_norm, norm_type=float(norm_type))
    total = clip_grad_norm(gs, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(expected.item(), rel=1e-13)
    for g, t in zip(gs, ts):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-13, atol=0)


def test_clip_grad_norm_on_modules_float32():
    torch = require_torch()
    model = Sequential(a=Linear(3, 4, seed=0), b=Linear(4, 2, seed=1))
    rng = np.random.default_rng(1)
    for buf in model.grads.values():
        buf[...] = rng.standard_normal(buf.shape) * 3
    before = {k: v.copy() for k, v in model.grads.items()}
    ts = []
    for v in before.values():
        t = torch.zeros(v.shape, requires_grad=True)
        t.grad = torch.tensor(v)
        ts.append(t)
    expected = torch.nn.utils.clip_grad_norm_(ts, 1.0)
    total = clip_grad_norm(model, 1.0)
    assert total == pytest.approx(expected.item(), rel=1e-6)
    for (k, v), t in zip(model.grads.items(), ts):
        assert v.dtype == np.float32
        np.testing.assert_allclose(v, t.grad.numpy(), rtol=1e-6)
    # now within the limit: the norm is returned and nothing changes
    again = clip_grad_norm([model.a, model.b], 10.0)
    assert again == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(grad_norm(model), 1.0, rtol=1e-5)


def test_clip_grad_norm_large_float32_does_not_overflow():
    g = np.full((1000,), 1e30, np.float32)
    total = clip_grad_norm([g], 1.0)
    assert total == pytest.approx(1e30 * math.sqrt(1000), rel=1e-6)
    assert np.linalg.norm(g.astype(np.float64)) == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_nonfinite():
    g = [np.array([1.0, np.inf])]
    with pytest.raises(RuntimeError):
        clip_grad_norm(g, 1.0, error_if_nonfinite=True)
    assert clip_grad_norm([np.zeros(3)], 1.0) == 0.0
    assert clip_grad_norm([], 1.0) == 0.0


@pytest.mark.parametrize("clip_value", [0.0, 0.3, 10.0])
def test_clip_grad_value_matches_torch(clip_value):
    torch = require_torch()
    gs = _grads(2, 1.0)
    gs[0][0, 0] = np.nan
    ts = []
    for g in gs:
        t = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.tensor(g)
        ts.append(t)
    torch.nn.utils.clip_grad_value_(ts, clip_value)
    assert clip_grad_value({"a": gs[0], "b": gs[1], "c": gs[2]}, clip_value) is None
    for g, t in zip(gs, ts):
        np.testing.assert_array_equal(g, t.grad.numpy())


def test_clip_errors():
    with pytest.raises(TypeError):
        clip_grad_norm("nope", 1.0)
    with pytest.raises(ValueError):
        clip_grad_value([np.ones(3)], -1.0)
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        clip_grad_norm([ro], 1.0)
