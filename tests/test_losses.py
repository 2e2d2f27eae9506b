"""Losses against torch.nn.functional and float64 finite differences."""
import numpy as np
import pytest

from pyrnn import losses
from _oracle import fd_check, require_torch

RNG = np.random.default_rng(0)


def _torch_masked(torch, elem, mask, reduction):
    """Reduce torch's per-element losses the way pyrnn does with a mask."""
    if mask is None:
        m = torch.ones_like(elem)
    else:
        m = torch.as_tensor(np.asarray(mask, np.float64)).reshape(
            tuple(mask.shape) + (1,) * (elem.ndim - mask.ndim)).expand_as(elem)
    total = (elem * m).sum()
    if reduction == "sum":
        return total
    return total / m.sum()


# ---------------------------------------------------------------- cross-entropy

@pytest.mark.parametrize("shape", [(7,), (4, 3), (5, 2, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_matches_torch(shape, reduction, smoothing):
    torch = require_torch()
    C = 6
    x = RNG.standard_normal(shape + (C,)) * 3
    t = RNG.integers(0, C, shape)
    t.reshape(-1)[::3] = -100  # ignored
    loss, g = losses.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing)
    xt = torch.tensor(x, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(
        xt.reshape(-1, C), torch.as_tensor(t).reshape(-1), reduction=reduction,
        label_smoothing=smoothing)
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_mask_matches_torch(reduction):
    torch = require_torch()
    T, B, C = 5, 3, 4
    x = RNG.standard_normal((T, B, C))
    t = RNG.integers(0, C, (T, B))
    mask = RNG.random((T, B)) < 0.6
    mask[0, 0] = True
    loss, g = losses.cross_entropy(x, t, mask=mask, reduction=reduction)
    xt = torch.tensor(x, requires_grad=True)
    elem = torch.nn.functional.cross_entropy(
        xt.reshape(-1, C), torch.as_tensor(t).reshape(-1), reduction="none").reshape(T, B)
    lt = _torch_masked(torch, elem, mask, reduction)
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-14)
    # masked positions get exactly zero gradient
    assert np.all(g[~mask] == 0)
    # a mask and ignore_index combine: only the positions passing both count
    t2 = t.copy()
    t2[1, :] = 7
    loss2, _ = losses.cross_entropy(x, t2, mask=mask, ignore_index=7, reduction="sum")
    keep = mask.copy()
    keep[1, :] = False
    loss3, _ = losses.cross_entropy(x, t, mask=keep, reduction="sum")
    assert loss2 == pytest.approx(loss3, rel=1e-14)


def test_cross_entropy_finite_differences():
    T, B, C = 3, 2, 5
    x = RNG.standard_normal((T, B, C))
    t = RNG.integers(0, C, (T, B))
    mask = np.array([[1, 1], [1, 0], [0.5, 1]])  # fractional = weight
    for kw in ({}, {"mask": mask}, {"label_smoothing": 0.1, "reduction": "sum"}):
        _, g = losses.cross_entropy(x, t, **kw)
        err = fd_check(lambda a: losses.cross_entropy(a[0], t, **kw)[0], [x], [g])
        assert err < 1e-8, (kw, err)


def test_cross_entropy_none_reduction_and_float32():
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    t = np.array([0, 2, -100, 1])
    elem, g = losses.cross_entropy(x, t, reduction="none")
    assert elem.shape == (4,) and elem[2] == 0 and g.dtype == np.float32
    total, g_sum = losses.cross_entropy(x, t, reduction="sum")
    assert total == pytest.approx(float(elem.sum()), rel=1e-6)
    np.testing.assert_allclose(g, g_sum, rtol=1e-6)
    ref = -losses.log_softmax(x.astype(np.float64))[[0, 1, 3], [0, 2, 1]]
    np.testing.assert_allclose(elem[[0, 1, 3]], ref, rtol=1e-6)


def test_cross_entropy_extreme_logits_stay_finite():
    torch = require_torch()
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]])
    t = np.array([1, 2, 0])
    for dt in (np.float32, np.float64):
        loss, g = losses.cross_entropy(x.astype(dt), t)
        assert np.isfinite(loss) and np.all(np.isfinite(g))
        xt = torch.tensor(x, requires_grad=True)
        lt = torch.nn.functional.cross_entropy(xt, torch.as_tensor(t))
        lt.backward()
        assert loss == pytest.approx(lt.item(), rel=1e-6)
        np.testing.assert_allclose(g, xt.grad.numpy(), atol=1e-6)
    # nan/inf in an ignored row cannot leak into the result
    x2 = x.copy()
    x2[0] = np.nan
    loss, g = losses.cross_entropy(x2, np.array([-100, 2, 0]))
    assert np.isfinite(loss) and np.all(g[0] == 0) and np.all(np.isfinite(g))


def test_cross_entropy_all_masked_is_zero():
    x = RNG.standard_normal((2, 3))
    loss, g = losses.cross_entropy(x, np.array([-100, -100]))
    assert loss == 0.0 and np.all(g == 0)


def test_cross_entropy_errors():
    x = RNG.standard_normal((4, 3))
    with pytest.raises(TypeError):
        losses.cross_entropy(x, np.array([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(TypeError):
        losses.cross_entropy(x.astype(np.int64), np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="targets"):
        losses.cross_entropy(x, np.array([0, 1, 3, 1]))
    with pytest.raises(ValueError, match="targets"):
        losses.cross_entropy(x, np.array([0, 1, -1, 1]))
    with pytest.raises(ValueError, match=r"targets: expected shape \(4,\), got \(3,\)"):
        losses.cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="mask"):
        losses.cross_entropy(x, np.array([0, 1, 2, 1]), mask=np.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        losses.cross_entropy(x, np.array([0, 1, 2, 1]), reduction="avg")


def test_softmax_helpers():
    torch = require_torch()
    x = RNG.standard_normal((3, 5)) * 50
    np.testing.assert_allclose(losses.log_softmax(x),
                               torch.log_softmax(torch.tensor(x), -1).numpy(), rtol=1e-13)
    np.testing.assert_allclose(losses.softmax(x, axis=0),
                               torch.softmax(torch.tensor(x), 0).numpy(), rtol=1e-12, atol=1e-300)
    assert np.all(np.isfinite(losses.log_softmax(np.array([1e4, -1e4]))))


# ---------------------------------------------------------------- BCE with logits

@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("use_pos_weight", [False, True])
def test_bce_matches_torch(reduction, use_pos_weight):
    torch = require_torch()
    shape = (4, 3, 5)
    x = RNG.standard_normal(shape) * 4
    x[0, 0, :2] = [1e4, -1e4]
    y = RNG.random(shape)
    y[1] = (y[1] > 0.5)
    pw = RNG.random(5) * 3 if use_pos_weight else None
    loss, g = losses.binary_cross_entropy_with_logits(x, y, reduction=reduction, pos_weight=pw)
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    xt = torch.tensor(x, requires_grad=True)
    lt = torch.nn.functional.binary_cross_entropy_with_logits(
        xt, torch.tensor(y), reduction=reduction,
        pos_weight=None if pw is None else torch.tensor(pw))
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_bce_mask_matches_torch_and_fd():
    torch = require_torch()
    x = RNG.standard_normal((5, 2, 3))
    y = (RNG.random((5, 2, 3)) > 0.5).astype(np.float64)
    mask = RNG.random((5, 2)) > 0.3  # masks whole (t, b) rows across features
    loss, g = losses.binary_cross_entropy_with_logits(x, y, mask=mask)
    xt = torch.tensor(x, requires_grad=True)
    elem = torch.nn.functional.binary_cross_entropy_with_logits(
        xt, torch.tensor(y), reduction="none")
    lt = _torch_masked(torch, elem, mask, "mean")
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-15)
    err = fd_check(lambda a: losses.binary_cross_entropy_with_logits(a[0], y, mask=mask)[0],
                   [x], [g])
    assert err < 1e-8
    # boolean targets are accepted; a bad shape is not
    l2, _ = losses.binary_cross_entropy_with_logits(x, y.astype(bool), mask=mask)
    assert l2 == pytest.approx(loss, rel=1e-15)
    with pytest.raises(ValueError, match="targets"):
        losses.binary_cross_entropy_with_logits(x, y[:4])


# ---------------------------------------------------------------- MSE

@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_matches_torch_and_fd(reduction):
    torch = require_torch()
    x = RNG.standard_normal((6, 2, 3))
    y = RNG.standard_normal((6, 2, 3))
    loss, g = losses.mse_loss(x, y, reduction=reduction)
    xt = torch.tensor(x, requires_grad=True)
    lt = torch.nn.functional.mse_loss(xt, torch.tensor(y), reduction=reduction)
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-13)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12)

    mask = np.zeros((6, 2))
    mask[:4] = 1
    loss_m, g_m = losses.mse_loss(x, y, mask=mask, reduction=reduction)
    xt = torch.tensor(x, requires_grad=True)
    lt = _torch_masked(torch, (xt - torch.tensor(y)) ** 2, mask, reduction)
    lt.backward()
    assert loss_m == pytest.approx(lt.item(), rel=1e-13)
    np.testing.assert_allclose(g_m, xt.grad.numpy(), rtol=1e-12, atol=1e-16)
    err = fd_check(lambda a: losses.mse_loss(a[0], y, mask=mask, reduction=reduction)[0],
                   [x], [g_m])
    assert err < 1e-8


def test_mse_dtype_and_errors():
    x = RNG.standard_normal((3, 2)).astype(np.float32)
    loss, g = losses.mse_loss(x, np.zeros((3, 2), np.int64))
    assert g.dtype == np.float32
    assert loss == pytest.approx(float(np.mean(x.astype(np.float64) ** 2)), rel=1e-6)
    with pytest.raises(TypeError):
        losses.mse_loss(np.ones((3, 2), int), x)
    with pytest.raises(ValueError, match=r"target: expected shape \(3, 2\), got \(2, 3\)"):
        losses.mse_loss(x, x.T)
