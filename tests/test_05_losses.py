"""Losses against PyTorch: cross_entropy (ignore_index, label_smoothing, reductions, leading dims,
stability, errors) and mse_loss, values and gradients in float64 and float32.

tinytorch puts the class axis last ((..., C) logits); torch wants it at dim 1, so the reference is
F.cross_entropy(logits.movedim(-1, 1), targets). Tolerance in float64: 1e-12 absolute plus 1e-14
relative (losses of ~1e4 from the extreme-logit cases differ by one ulp).
"""
import numpy as np
import pytest

from tinytorch.core.tensor import Tensor
from tinytorch.core.autograd import gradcheck
from tinytorch.core.losses import cross_entropy, mse_loss, CrossEntropyLoss, MSELoss

torch = pytest.importorskip("torch")
F = torch.nn.functional

ATOL64 = 1e-12


def _logits_targets(shape, seed=0, ignore=0, scale=2.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * scale
    t = rng.integers(0, shape[-1], shape[:-1])
    if ignore:
        t.reshape(-1)[rng.choice(t.size, ignore, replace=False)] = -100
    return x, t


def _torch_ce(x, t, dtype=torch.float64, **kw):
    tx = torch.tensor(x, dtype=dtype, requires_grad=True)
    loss = F.cross_entropy(tx.movedim(-1, 1) if tx.ndim > 2 else tx, torch.tensor(t), **kw)
    return tx, loss


def _check_ce(x, t, dtype=np.float64, atol=ATOL64, rtol=1e-14, **kw):
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    ours_x = Tensor(x, dtype=dtype, requires_grad=True)
    ours = cross_entropy(ours_x, t, **kw)
    tx, ref = _torch_ce(x.astype(dtype), t, dtype=tdtype, **kw)
    g = np.random.default_rng(9).standard_normal(ours.shape).astype(dtype)
    ours.backward(g)
    ref.backward(torch.tensor(g))
    assert ours.dtype == dtype and ours.shape == tuple(ref.shape) and ours_x.grad.dtype == dtype
    np.testing.assert_allclose(ours.data, ref.detach().numpy(), rtol=rtol, atol=atol, equal_nan=True)
    np.testing.assert_allclose(ours_x.grad.data, tx.grad.numpy(), rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("ignore", [0, 3])
@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 5), (2, 2, 3, 4), (6,)])
def test_cross_entropy_matches_torch(shape, ignore, label_smoothing, reduction):
    x, t = _logits_targets(shape, seed=len(shape), ignore=ignore if len(shape) > 1 else 0)
    _check_ce(x, t, reduction=reduction, label_smoothing=label_smoothing)


@pytest.mark.parametrize("ignore_index", [0, 2, 50])
def test_ignore_index_values_match_torch(ignore_index):
    x, t = _logits_targets((4, 6, 3), seed=11)
    t[0, :2] = ignore_index if ignore_index < 3 else 50
    for reduction in ("mean", "sum", "none"):
        _check_ce(x, t, ignore_index=ignore_index, reduction=reduction, label_smoothing=0.2)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.filterwarnings("ignore:cross_entropy. no target to average:RuntimeWarning")     # the point of the test
def test_all_ignored_matches_torch(reduction, label_smoothing):
    x, _ = _logits_targets((3, 4), seed=12)
    t = np.full(3, -100)
    _check_ce(x, t, reduction=reduction, label_smoothing=label_smoothing)   # mean: NaN loss, zero gradient


def test_extreme_and_masked_logits_match_torch():
    x = np.array([[1e4, -1e4, 0.0, 3.0],
                  [-1e4, -1e4 + 1.0, -1e4 - 2.0, -1e4],
                  [0.5, -np.inf, 2.0, 1.5],                 # a masked class that is not the target
                  [1e4, 1e4, -1e4, 0.0]])
    t = np.array([1, 2, 0, 3])
    for reduction in ("mean", "none"):
        _check_ce(x, t, reduction=reduction)
    _check_ce(x[[0, 1, 3]], t[[0, 1, 3]], label_smoothing=0.1)
    loss = cross_entropy(Tensor(x), t)
    assert loss.dtype == np.float32 and np.isfinite(loss.item())


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_gpt_shaped_float32_matches_torch(label_smoothing):
    x, t = _logits_targets((12, 64, 65), seed=13, ignore=20, scale=4.0)
    _check_ce(x, t, dtype=np.float32, atol=2e-6, rtol=1e-5, label_smoothing=label_smoothing)
    _check_ce(x, t, dtype=np.float32, atol=2e-6, rtol=1e-5, reduction="none")


def test_gradcheck_with_leading_dims():
    x, t = _logits_targets((2, 3, 4), seed=14, ignore=1)
    for reduction in ("mean", "sum", "none"):
        assert gradcheck(lambda a: cross_entropy(a, t, reduction=reduction, label_smoothing=0.15),
                         [Tensor(x, dtype=np.float64)])


def test_targets_may_be_tensor_list_or_unsigned():
    x, t = _logits_targets((5, 4), seed=15)
    expected = cross_entropy(Tensor(x), t).item()
    assert cross_entropy(Tensor(x), Tensor(t)).item() == expected
    assert cross_entropy(Tensor(x), t.tolist()).item() == expected
    assert cross_entropy(Tensor(x), t.astype(np.uint8)).item() == expected
    assert cross_entropy(Tensor(x), t.astype(np.int32)).item() == expected


def test_no_graph_under_no_grad():
    # the fused kernel's single node is tested in module 17
    from tinytorch.core.autograd import no_grad
    x, t = _logits_targets((3, 4), seed=16)
    xt = Tensor(x, requires_grad=True)
    assert cross_entropy(xt, t)._node is not None
    with no_grad():
        assert cross_entropy(xt, t)._node is None


def test_cross_entropy_errors():
    x = Tensor(np.zeros((2, 3, 5)))
    with pytest.raises(IndexError, match=r"target id 5 is out of range for 5 classes \(valid ids are 0 to 4; "
                                         r"ignore_index=-100"):
        cross_entropy(x, np.array([[0, 5, 1], [2, 3, 4]]))
    with pytest.raises(IndexError, match="target id -3 is out of range for 5 classes"):
        cross_entropy(x, np.array([[0, 1, 1], [2, -3, 4]]), ignore_index=-1)
    with pytest.raises(TypeError, match=r"targets must be integer class ids, got dtype float32 \(class-probability"):
        cross_entropy(x, Tensor(np.zeros((2, 3))))
    with pytest.raises(TypeError, match="targets must be integer class ids, got dtype bool"):
        cross_entropy(x, np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"logits of shape \(2, 3, 5\) need targets of shape \(2, 3\) "
                                         r"\(classes on the last axis\), got targets of shape \(2, 5\)"):
        cross_entropy(x, np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(TypeError, match="cross_entropy: logits must be a Tensor, got ndarray"):
        cross_entropy(np.zeros((2, 5)), np.zeros(2, dtype=np.int64))
    with pytest.raises(TypeError, match=r"floating-point tensor with a class axis, got dtype float32 and shape \(\)"):
        cross_entropy(Tensor(1.0), np.array(0))


def test_mse_matches_torch():
    rng = np.random.default_rng(17)
    a, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    g_none = rng.standard_normal((3, 4, 5))
    for reduction in ("mean", "sum", "none"):
        for dtype, tdtype, atol in ((np.float64, torch.float64, 1e-14), (np.float32, torch.float32, 1e-6)):
            x, y = Tensor(a, dtype=dtype, requires_grad=True), Tensor(b, dtype=dtype, requires_grad=True)
            tx = torch.tensor(a, dtype=tdtype, requires_grad=True)
            ty = torch.tensor(b, dtype=tdtype, requires_grad=True)
            loss, ref = mse_loss(x, y, reduction), F.mse_loss(tx, ty, reduction=reduction)
            g = g_none.astype(dtype) if reduction == "none" else np.array(1.5, dtype=dtype)
            loss.backward(g)
            ref.backward(torch.tensor(g))
            assert loss.dtype == dtype and x.grad.dtype == dtype
            np.testing.assert_allclose(loss.data, ref.detach().numpy(), rtol=1e-6 if dtype == np.float32 else 0, atol=atol)
            np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), atol=atol)
            np.testing.assert_allclose(y.grad.data, ty.grad.numpy(), atol=atol)


def test_loss_objects_match_functions_and_torch_reprs():
    x, t = _logits_targets((2, 3, 4), seed=18, ignore=2)
    xt = Tensor(x, dtype=np.float64)
    crit = CrossEntropyLoss(ignore_index=-100, reduction="none", label_smoothing=0.1)
    np.testing.assert_array_equal(crit(xt, t).data, cross_entropy(xt, t, reduction="none", label_smoothing=0.1).data)
    assert repr(CrossEntropyLoss()) == repr(torch.nn.CrossEntropyLoss()) and repr(MSELoss()) == repr(torch.nn.MSELoss())
    with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0, got -0.1"):
        CrossEntropyLoss(label_smoothing=-0.1)
