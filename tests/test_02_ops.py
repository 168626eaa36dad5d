"""Tensor operations (module 02): reductions, matmul, shape ops, indexing, joining, selecting, comparisons.

Gradients are tested in tests/test_03_autograd.py; here every op's forward result is compared
with NumPy or PyTorch, and every error is checked with its message.
"""
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
import hypothesis.extra.numpy as hnp

from tinytorch import Tensor
from tinytorch.core import ops as O

try:
    import torch
except ImportError:          # torch is a test dependency only
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
HYPOTHESIS = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def _x(*shape, seed=0, dtype=np.float64):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def _raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Zero-dimensional results, comparisons and hashing, NumPy operands, the bound methods

def test_zero_dim_results_hold_arrays():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    for t in (x.sum(), x.mean(), x.var(), x.max(), x[1, 2], x[0] @ x[0], Tensor(1.0) > 0, x.detach().sum()):
        assert type(t.data) is np.ndarray and t.shape == () and type(t.numpy()) is np.ndarray
        assert np.asarray(t).shape == () and np.array(t).shape == ()          # NumPy scalars would make these fail
    loss = x.sum()
    loss.data[...] = 1.0
    assert loss.item() == 1.0


def test_comparisons_keep_tensors_hashable_and_truth_values_like_torch():
    assert not (Tensor([1.0]) > 2.0)
    assert Tensor([1.0]) not in [Tensor([2.0]), Tensor([3.0])]              # `in` compares with ==
    t = Tensor([1.0, 2.0])
    assert {t: 1}[t] == 1 and len({t, t.detach()}) == 2                     # == is elementwise, hashing by identity
    with pytest.raises((ValueError, RuntimeError), match="ambiguous"):
        bool(t == t)


def test_numpy_scalar_arguments_keep_float32():
    x = Tensor([1.0, -2.0, 0.25])
    for out in (O.where(x > 0, x, np.float64(0.0)), x.masked_fill(x > 0, np.float64(1.0))):
        assert out.dtype == np.float32


def test_numpy_operands_on_either_side_of_matmul_give_tensors():
    t, a = Tensor([[1.0, 2.0], [3.0, 4.0]]), np.array([[10.0, 20.0], [30.0, 40.0]], dtype=np.float32)
    for out, expected in [(a @ t, a @ t.data), (t @ a, t.data @ a)]:
        assert isinstance(out, Tensor) and out.dtype == np.float32
        np.testing.assert_allclose(out.data, expected, rtol=1e-6)
    with pytest.raises(TypeError, match="unsupported operand of type list"):
        t @ [1.0, 2.0]


COMPARE_FORWARD = {
    "lt": (lambda a, b: a < b, np.less), "le": (lambda a, b: a <= b, np.less_equal),
    "gt": (lambda a, b: a > b, np.greater), "ge": (lambda a, b: a >= b, np.greater_equal),
    "eq": (lambda a, b: a == b, np.equal), "ne": (lambda a, b: a != b, np.not_equal),
}


@HYPOTHESIS
@given(sa=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3),
       sb=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3), op=st.sampled_from(sorted(COMPARE_FORWARD)))
def test_comparison_broadcasting_matches_numpy_or_names_the_shapes(sa, sb, op):
    mine, reference = COMPARE_FORWARD[op]
    a, b = _x(*sa, seed=1), _x(*sb, seed=2)
    try:
        shape = np.broadcast_shapes(sa, sb)
    except ValueError:
        with pytest.raises(ValueError, match=rf"^{op}: shapes {re.escape(str(sa))} and {re.escape(str(sb))} "
                                             r"cannot be broadcast together$"):
            mine(a, b)
        return
    out = mine(a, b)
    assert out.shape == shape and out.dtype == np.bool_ and not out.requires_grad
    np.testing.assert_array_equal(out.data, reference(a.data, b.data))


def test_comparison_shape_errors_name_the_op_and_both_shapes():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4,)))
    for op, fn in [("lt", lambda: a < b), ("le", lambda: a <= b), ("gt", lambda: a > b), ("ge", lambda: a >= b),
                   ("eq", lambda: a == b), ("ne", lambda: a != b)]:
        _raises(ValueError, rf"^{op}: shapes \(2, 3\) and \(4,\) cannot be broadcast together$", fn)


def test_operators_bound():
    a = Tensor([[1.0, 2.0], [3.0, 4.0]])
    assert np.array_equal((a @ a).data, a.data @ a.data) and np.array_equal(a.T.data, a.data.T)
    assert np.array_equal(a.mT.data, a.data.T) and np.array_equal((a.data @ a).data, a.data @ a.data)
    assert (a > 2).dtype == np.bool_ and np.array_equal((a > 2).data, a.data > 2)
    assert a.sum(dim=0).shape == (2,) and a.view(4).shape == (4,) and a[0, 1].item() == 2.0


# ---------------------------------------------------------------------------------------------
# Reductions

@needs_torch
@pytest.mark.parametrize("op", ["sum", "max", "min"])
def test_integer_reductions_keep_integers_like_torch(op):
    x = np.arange(24).reshape(2, 3, 4) % 7
    for axis in (None, 1, (0, 2)):
        mine = getattr(Tensor(x), op)(axis=axis)
        dim = tuple(range(3)) if axis is None else axis
        theirs = getattr(torch, {"sum": "sum", "max": "amax", "min": "amin"}[op])(torch.from_numpy(x), dim=dim)
        assert mine.dtype == np.int64 and np.array_equal(mine.data, theirs.numpy())


def test_reduction_keepdims_shapes():
    x = Tensor(np.ones((2, 3, 4)))
    for op in ("sum", "mean", "max", "min", "var"):
        fn = getattr(x, op)
        assert fn().shape == () and fn(keepdims=True).shape == (1, 1, 1)
        assert fn(axis=(0, -1)).shape == (3,) and fn(dim=(0, -1), keepdim=True).shape == (1, 3, 1)
        assert fn(1).shape == (2, 4)
        assert np.array_equal(getattr(O, op)(x, axis=-1).data, fn(axis=-1).data)


def test_reductions_forward():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    assert np.array_equal(O.sum(x).data, x.data.sum())
    assert np.array_equal(O.sum(x, axis=(0, 2)).data, x.data.sum(axis=(0, 2)))
    assert O.sum(x, dim=1, keepdim=True).shape == (2, 1, 4)
    assert np.allclose(O.mean(x, axis=-1).data, x.data.mean(axis=-1))
    assert np.array_equal(O.max(x, axis=1).data, x.data.max(axis=1)) and O.max(x, axis=1).shape == (2, 4)
    assert np.array_equal(O.min(x, axis=(0, 1), keepdims=True).data, x.data.min(axis=(0, 1), keepdims=True))
    assert np.allclose(O.var(x, axis=2).data, x.data.var(axis=2, ddof=1))
    assert np.allclose(O.var(x, axis=2, correction=0).data, x.data.var(axis=2))


def test_reduction_errors():
    x = Tensor(np.ones((2, 2)))
    for op in ("sum", "mean", "max", "min", "var"):
        _raises(ValueError, r"^axis 2 is out of range for a tensor with 2 dimensions$", getattr(x, op), axis=2)
        _raises(ValueError, r"^axis -3 is out of range for a tensor with 2 dimensions$", getattr(x, op), dim=(0, -3))
        _raises(TypeError, r"^give either axis= or dim=, not both$", getattr(x, op), axis=0, dim=0)


# ---------------------------------------------------------------------------------------------
# Matrix multiplication

def test_matmul_forward():
    rng = np.random.default_rng(0)
    for sa, sb in [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                   ((2, 1, 3, 4), (5, 4, 2))]:
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        assert np.allclose(O.matmul(Tensor(a), Tensor(b)).data, a @ b)


def test_matmul_errors():
    _raises(ValueError, r"^matmul: shapes \(3, 4\) and \(5, 6\) do not match \(inner dimensions 4 and 5\)$",
            lambda: Tensor(np.ones((3, 4))) @ Tensor(np.ones((5, 6))))
    _raises(ValueError, r"^matmul: shapes \(3,\) and \(4,\) do not match \(inner dimensions 3 and 4\)$",
            lambda: Tensor(np.ones(3)) @ Tensor(np.ones(4)))
    _raises(ValueError, r"matmul: both operands need at least one dimension; got shapes \(\) and \(3,\)",
            lambda: Tensor(2.0) @ Tensor(np.ones(3)))
    with pytest.raises(ValueError, match=r"^matmul: shapes \(2, 3, 4\) and \(3, 4, 5\)") as info:
        Tensor(np.ones((2, 3, 4))) @ Tensor(np.ones((3, 4, 5)))
    assert "inner dimensions 4 and 4" not in str(info.value), "the inner dimensions match; the batch ones do not"


# ---------------------------------------------------------------------------------------------
# Shape operations

def test_shape_ops_forward():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    assert O.reshape(x, 4, -1).shape == (4, 6) and O.reshape(x, (6, 4)).shape == (6, 4)
    assert O.unsqueeze(x, 1).shape == (2, 1, 3, 4) and O.unsqueeze(x, -1).shape == (2, 3, 4, 1)
    assert O.squeeze(O.unsqueeze(x, 0)).shape == (2, 3, 4) and O.squeeze(Tensor(np.ones((1, 2, 1))), 0).shape == (2, 1)
    assert O.flatten(x).shape == (24,) and O.flatten(x, 1).shape == (2, 12)
    assert np.array_equal(O.transpose(x, 0, 2).data, x.data.transpose(2, 1, 0))
    assert np.array_equal(O.permute(x, 1, 2, 0).data, x.data.transpose(1, 2, 0))
    assert O.expand(Tensor(np.ones((3, 1))), 2, 3, 4).shape == (2, 3, 4)
    assert O.expand(Tensor(np.ones((3, 1))), -1, 5).shape == (3, 5)


def test_shape_op_errors():
    x = Tensor(np.ones((2, 3)))
    _raises(ValueError, r"^reshape: cannot reshape a tensor of shape \(2, 3\) \(6 elements\) into \(4, 2\)$",
            x.reshape, 4, 2)
    _raises(ValueError, r"^expand: cannot expand shape \(2, 3\) to \(2, 4\)$", x.expand, 2, 4)
    _raises(ValueError, r"^expand: cannot expand shape \(2, 3\) to fewer dimensions \(3,\)$", x.expand, 3)
    _raises(ValueError, r"^expand: .*\(3,\).*-1", Tensor(np.ones(3)).expand, -1, 3)     # -1 on a new dimension
    _raises(ValueError, r"^permute: \(0, 0\) is not a permutation of the 2 dimensions of shape \(2, 3\)$",
            x.permute, 0, 0)
    _raises(ValueError, r"^permute: \(0,\) is not a permutation", x.permute, 0)
    _raises(ValueError, r"^permute: \(0, 3\) is not a permutation", x.permute, 0, 3)            # out of range
    _raises(ValueError, r"^permute: \(-3, 1\) is not a permutation", x.permute, -3, 1)
    _raises(ValueError, r"^transpose: dimension 2 is out of range for a tensor of shape \(2, 3\)$", x.transpose, 0, 2)
    _raises(ValueError, r"^squeeze: dimension -3 is out of range for a tensor of shape \(2, 3\)$", x.squeeze, -3)
    _raises(ValueError, r"^unsqueeze: dimension 3 is out of range for a tensor of shape \(2, 3\)$", x.unsqueeze, 3)
    _raises(ValueError, r"^flatten: dimension 5 is out of range for a tensor of shape \(2, 3\)$", x.flatten, 5)
    _raises(ValueError, r"^transpose: dimension -3 is out of range", lambda: x.mT.transpose(-3, 0))


# ---------------------------------------------------------------------------------------------
# Indexing, joining, selecting

def test_indexing_matches_numpy():
    x = Tensor(np.arange(120.0).reshape(4, 5, 6))
    for idx in [0, -1, (1, 2, 3), slice(None, None, -1), (slice(3, 0, -2), Ellipsis, slice(None, None, -1)),
                (None, Ellipsis, None), (x.data > 60,), (np.array([True, False, True, False]), 1),
                ([0, -1, 0],), (np.array([[0, 1], [2, 3]]), slice(None), np.array([[5], [0]])),
                (Ellipsis, [1, 1]), (slice(1, 3), 2, [0, 5])]:
        out = x[idx]
        assert np.array_equal(out.data, x.data[idx]) and out.dtype == np.float32


def test_indexing_forward():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    for idx in [0, (1, 2), (slice(None), 1), (Ellipsis, 0), (None, 0), ([1, 1, 0],), (x.data > 5,),
                (slice(None), [0, 2], [1, 3]), Tensor([0, 1])]:
        expected = x.data[O._index_data(idx)]
        assert np.array_equal(O.getitem(x, idx).data, expected)


@needs_torch
def test_split_cat_stack_forward_match_torch():
    x = np.arange(35.0).reshape(5, 7)
    for size, dim in [(2, 1), (3, 0), ([2, 4, 1], 1), (7, -1), ([5], 0)]:
        mine, theirs = O.split(Tensor(x), size, dim=dim), torch.split(torch.from_numpy(x), size, dim=dim)
        assert len(mine) == len(theirs)
        for m, t in zip(mine, theirs):
            assert np.array_equal(m.data, t.numpy())
    a, b = np.ones((2, 3)), np.zeros((2, 3))
    for dim in (0, 1, -1, -2):
        assert np.array_equal(O.cat([Tensor(a), Tensor(b)], dim=dim).data, torch.cat([torch.from_numpy(a),
                                                                                    torch.from_numpy(b)], dim).numpy())
    for dim in (0, 1, 2, -1, -3):
        assert np.array_equal(O.stack([Tensor(a), Tensor(b)], dim=dim).data,
                              torch.stack([torch.from_numpy(a), torch.from_numpy(b)], dim).numpy())


def test_where_and_masked_fill_broadcast():
    cond = np.array([[True], [False]])
    out = O.where(cond, Tensor([1.0, 2.0, 3.0]), 0.0)
    assert out.dtype == np.float32 and out.tolist() == [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
    out = O.where(Tensor(cond), 5, Tensor(np.zeros((2, 3)), dtype=np.float64))
    assert out.dtype == np.float64 and out.tolist() == [[5.0] * 3, [0.0] * 3]
    assert O.where(cond, 1.0, 2.0).tolist() == [[1.0], [2.0]]
    x = Tensor(np.arange(6.0).reshape(2, 3))
    assert x.masked_fill(np.array([True, False, True]), -1.0).tolist() == [[-1, 1, -1], [-1, 4, -1]]
    assert x.masked_fill(x > 3, float("-inf")).tolist() == [[0, 1, 2], [3, -np.inf, -np.inf]]
    assert x.masked_fill(x > 3, 1).dtype == np.float32


def test_join_and_select_forward():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.zeros((2, 2)))
    assert O.cat([a, b], axis=1).shape == (2, 5) and O.cat([a, a], dim=0).shape == (4, 3)
    assert O.stack([a, a], axis=1).shape == (2, 2, 3)
    pieces = O.split(Tensor(np.arange(10.0)), 4)
    assert [p.shape for p in pieces] == [(4,), (4,), (2,)]
    assert [p.shape for p in O.split(Tensor(np.ones((2, 5))), [2, 3], dim=1)] == [(2, 2), (2, 3)]
    x = Tensor([1.0, -2.0, 3.0])
    assert np.array_equal(O.where(x.data > 0, x, Tensor(0.0)).data, [1.0, 0.0, 3.0])
    assert np.array_equal(O.masked_fill(x, x.data < 0, -np.inf).data, [1.0, -np.inf, 3.0])


def test_join_and_select_errors():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((3, 2)))
    _raises(ValueError, r"^cat: shapes \[\(2, 3\), \(3, 2\)\] cannot be joined along axis 0$", O.cat, [a, b])
    _raises(ValueError, r"^cat: shapes \[\(2, 3\), \(2, 3\)\] cannot be joined along axis 2$", O.cat, [a, a], dim=2)
    _raises(ValueError, r"^cat: expected a non-empty sequence of tensors$", O.cat, [])
    _raises(ValueError, r"^stack: expected a non-empty sequence of tensors$", O.stack, [])
    _raises(ValueError, r"^stack: all tensors must have the same shape; got \[\(2, 3\), \(3, 2\)\]$", O.stack, [a, b])
    _raises(ValueError, r"^split: piece size must be positive, got 0$", O.split, a, 0)
    _raises(ValueError, r"^split: sizes \[1, 1\] add up to 2, but dimension 1 has size 3$", a.split, [1, 1], dim=1)
    _raises(ValueError, r"^split: dimension 2 is out of range for a tensor of shape \(2, 3\)$", a.split, 1, 2)
    _raises(TypeError, r"^where: condition must be boolean, got dtype float32$", O.where, a, a, a)
    _raises(ValueError, r"^where: shapes \(2,\), \(3,\) and \(3,\) cannot be broadcast together$",
            O.where, np.array([True, False]), Tensor(np.ones(3)), Tensor(np.ones(3)))
    _raises(TypeError, r"^masked_fill: mask must be boolean, got dtype int64$", a.masked_fill, np.ones(3, int), 0.0)
    _raises(ValueError, r"^masked_fill: mask of shape \(2, 2, 3\) does not broadcast to the tensor's shape \(2, 3\)$",
            a.masked_fill, np.ones((2, 2, 3), bool), 0.0)
    _raises(IndexError, r"^index into a tensor of shape \(2, 3\): index 5 is out of bounds", lambda: a[0, 5])
    _raises(IndexError, r"^index into a tensor of shape \(2, 3\): too many indices", lambda: a[0, 0, 0])
    _raises(IndexError, r"^index into a tensor of shape \(2, 3\): boolean index did not match",
            lambda: a[np.ones(3, bool)])


# ---------------------------------------------------------------------------------------------
# Comparisons against PyTorch

@needs_torch
@pytest.mark.parametrize("op", ["lt", "le", "gt", "ge", "eq", "ne"])
def test_comparisons_match_torch(op):
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    ta, tb = Tensor(a, dtype=np.float64), Tensor(b, dtype=np.float64)
    fn = getattr(type(ta), f"__{op}__")
    for mine, theirs in [(fn(ta, tb), getattr(torch.from_numpy(a), op)(torch.from_numpy(b))),
                         (fn(ta, 2.0), getattr(torch.from_numpy(a), op)(2.0)),
                         (fn(ta, b), getattr(torch.from_numpy(a), op)(torch.from_numpy(b)))]:
        assert mine.dtype == np.bool_ and not mine.requires_grad
        assert np.array_equal(mine.data, theirs.numpy())
    assert np.array_equal((2.0 < ta).data, a > 2.0) and np.array_equal((2.0 == ta).data, a == 2.0)
