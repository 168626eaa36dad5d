"""Autograd against PyTorch: the value and the gradient of every op, and the backward engine.

Every op runs in float64 in tinytorch and in PyTorch on the same inputs; the forward values
and the gradients (for a random upstream gradient) must agree. Tolerances: ops that only move
numbers (reshape, permute, indexing, cat, stack, split, where, masked_fill) must match exactly;
every other op within |a - b| <= 1e-10 * max(1, |b|). Every differentiable case also passes
`gradcheck` (central differences), and runs in float32 with float32 values and gradients.
"""
import gc
import re
import threading
import time
import weakref

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
import hypothesis.extra.numpy as hnp

from tinytorch import Tensor, no_grad
from tinytorch.core import tensor as T
from tinytorch.core.autograd import (GradcheckError, enable_grad, grad, gradcheck, is_grad_enabled,
                                     set_grad_enabled)
from tinytorch.core.tensor import DERIVATIVES

try:
    import torch
except ImportError:          # torch is a test dependency only; the engine tests below still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
HYPOTHESIS = settings(max_examples=40, deadline=None, derandomize=True, database=None)
TOL = 1e-10


# ---------------------------------------------------------------------------------------------
# Helpers

def _array(shape, domain="real", seed=0):
    "Float64 test data: `real` (normal), `positive` (>= 0.5), `away0` (|x| >= 0.1), `ties` (few integers)."
    rng = np.random.default_rng(seed)
    if domain == "ties":
        return rng.integers(-2, 3, size=shape).astype(np.float64)
    x = np.asarray(rng.standard_normal(shape), dtype=np.float64)
    if domain == "positive": return np.abs(x) + 0.5
    if domain == "away0": return np.sign(x) * (np.abs(x) + 0.1)
    return x


def _inputs(shapes, domains):
    domains = (domains,) * len(shapes) if isinstance(domains, str) else domains
    return [_array(s, d, seed=i + 1) for i, (s, d) in enumerate(zip(shapes, domains))]


def _values_at(idx, shape, inputs):
    "Each input's value at position `idx` of an array of `shape` (inputs that broadcast to it; others left out)."
    out = []
    for name, x in inputs:
        try:
            out.append(f"{name} = {np.broadcast_to(np.asarray(x), shape)[idx]:.10g}")
        except ValueError:
            pass
    return ", ".join(out)


def assert_match(actual, expected, exact=False, tol=TOL, what="value", inputs=()):
    """Same shape, same NaN/inf pattern, and max abs/rel error <= tol (or bitwise equal if exact).

    A mismatch names the worst index, the two values there, the error, and the value there of each of
    `inputs` (pairs of name and array) that broadcasts to the compared shape, e.g. the x = 0 of a kink."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    with np.errstate(invalid="ignore"):
        if exact:
            bad = ~((actual == expected) | (np.isnan(actual) & np.isnan(expected)))
            err = np.where(bad, np.inf, 0.0)
        else:
            nan_a, nan_e = np.isnan(actual), np.isnan(expected)
            inf = np.isinf(expected) | np.isinf(actual)
            rel = np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))
            err = np.where(nan_a | nan_e, np.where(nan_a == nan_e, 0.0, np.inf),
                           np.where(inf, np.where(actual == expected, 0.0, np.inf), rel))
            bad = err > tol
    if not bad.any():
        return
    idx = np.unravel_index(int(np.argmax(np.where(bad, err, -1.0))), actual.shape) if actual.ndim else ()
    where = f" at index {tuple(int(i) for i in idx)}" if actual.ndim else ""
    there = _values_at(idx, actual.shape, inputs)
    limit = "bitwise equality" if exact else f"{tol:g}"
    raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} values differ from PyTorch; worst{where}"
                         f"{', where ' + there if there else ''}: got {actual[idx]:.10g}, PyTorch {expected[idx]:.10g} "
                         f"(abs/rel error {err[idx]:.3g} > {limit})")


def run_parity(tt_fn, th_fn, arrays, exact=False, tol=TOL, seed=1234):
    "Run both frameworks in float64 on the same inputs; compare output and every input's gradient."
    names = ["x"] if len(arrays) == 1 else [chr(ord("a") + k) for k in range(len(arrays))]
    named = list(zip(names, arrays))
    tt_in = [Tensor(a, dtype=np.float64, requires_grad=True) for a in arrays]
    th_in = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out, ref = tt_fn(*tt_in), th_fn(*th_in)
    assert isinstance(out, Tensor) and out.dtype == np.float64 and out.requires_grad
    assert_match(out.data, ref.detach().numpy(), exact, tol, "forward", named)
    rng = np.random.default_rng(seed)
    # Integer upstream gradients keep sums exact whatever their order, so exact cases stay exact.
    g = rng.integers(-4, 5, size=ref.shape).astype(np.float64) if exact else rng.standard_normal(ref.shape)
    g = np.asarray(g, dtype=np.float64)
    out.backward(g)
    ref.backward(torch.tensor(g))
    for k, (t, r) in enumerate(zip(tt_in, th_in)):
        expected = np.zeros(r.shape) if r.grad is None else r.grad.numpy()
        assert t.grad is not None, f"input {k} ({names[k]}) got no gradient"
        assert t.grad.dtype == np.float64 and t.grad.shape == t.shape
        assert_match(t.grad.data, expected, exact, tol, f"gradient of input {k} ({names[k]})",
                     [(names[k], arrays[k])] + [p for j, p in enumerate(named) if j != k])
    return tt_in


def _th_index(idx):
    "The same index for a torch tensor (arrays and lists become torch tensors)."
    def one(i):
        if isinstance(i, Tensor): return torch.from_numpy(i.data)
        if isinstance(i, np.ndarray): return torch.from_numpy(i)
        if isinstance(i, list): return torch.tensor(i)
        return i
    return tuple(one(i) for i in idx) if isinstance(idx, tuple) else one(idx)


# ---------------------------------------------------------------------------------------------
# The op table: (tinytorch fn, torch fn, input shapes, input domain(s), exact, gradcheck-able)
# The torch fns are lambdas so that the table can be built without torch installed.

CASES = {}


def case(name, tt_fn, th_fn, shapes, domain="real", exact=False, smooth=True):
    assert name not in CASES, name
    CASES[name] = (tt_fn, th_fn, shapes, domain, exact, smooth)


BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4)), ((2, 1, 4), (3, 1)), ((), (2, 3)),
                    ((2, 3), ()), ((4, 1), (1, 5)), ((1,), (2, 1, 3))]
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, "real"),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, "real"),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, "real"),
    "div": (lambda a, b: a / b, lambda a, b: a / b, ("real", "positive")),
    "pow": (lambda a, b: a ** b, lambda a, b: a ** b, ("positive", "real")),
    "pow_method": (lambda a, b: a.pow(b), lambda a, b: a.pow(b), ("positive", "real")),
    "maximum": (lambda a, b: T.maximum(a, b), lambda a, b: torch.maximum(a, b), "real"),
    "minimum": (lambda a, b: T.minimum(a, b), lambda a, b: torch.minimum(a, b), "real"),
}
for _op, (_tt, _th, _dom) in BINARY.items():
    for _sa, _sb in BROADCAST_SHAPES:
        case(f"{_op}{_sa}{_sb}", _tt, _th, (_sa, _sb), _dom)
for _op in ("maximum", "minimum"):                               # ties share the gradient evenly
    _tt, _th, _ = BINARY[_op]
    case(f"{_op}_ties", _tt, _th, ((3, 4), (4,)), "ties", smooth=False)
    case(f"{_op}_self", lambda a, _f=_tt: _f(a, a), lambda a, _f=_th: _f(a, a), ((3, 4),), smooth=False)

SCALAR = {      # Python numbers on either side; the same lambda runs on both frameworks
    "x+2.5": (lambda x: x + 2.5, "real"), "2.5+x": (lambda x: 2.5 + x, "real"),
    "x+2": (lambda x: x + 2, "real"), "x-3": (lambda x: x - 3, "real"), "3-x": (lambda x: 3 - x, "real"),
    "0.5-x": (lambda x: 0.5 - x, "real"), "x*-1.5": (lambda x: x * -1.5, "real"),
    "-1.5*x": (lambda x: -1.5 * x, "real"), "x*2": (lambda x: x * 2, "real"), "2*x": (lambda x: 2 * x, "real"),
    "x/4": (lambda x: x / 4, "real"), "x/0.3": (lambda x: x / 0.3, "real"),
    "4/x": (lambda x: 4 / x, "away0"), "1.5/x": (lambda x: 1.5 / x, "positive"),
    "x**2": (lambda x: x ** 2, "real"), "x**3": (lambda x: x ** 3, "real"), "x**1": (lambda x: x ** 1, "real"),
    "x**0": (lambda x: x ** 0, "real"), "x**0.5": (lambda x: x ** 0.5, "positive"),
    "x**-1": (lambda x: x ** -1, "away0"), "x**1.7": (lambda x: x ** 1.7, "positive"),
    "x**-2.5": (lambda x: x ** -2.5, "positive"), "x**2.0": (lambda x: x ** 2.0, "real"),
    "2.0**x": (lambda x: 2.0 ** x, "real"), "2**x": (lambda x: 2 ** x, "real"),
    "0.5**x": (lambda x: 0.5 ** x, "real"), "-x": (lambda x: -x, "real"),
    "x*np.float64": (lambda x: x * np.float64(1.5), "real"), "np.float64*x": (lambda x: np.float64(1.5) * x, "real"),
    "x*np.float32": (lambda x: x * np.float32(0.25), "real"), "x*True": (lambda x: x * True, "real"),
    "mixed": (lambda x: (2.0 - x) * 3.0 / 4.0 + 1.0 - 1.5 / (x * x + 1.0), "real"),
}
for _name, (_fn, _dom) in SCALAR.items():
    case(f"scalar {_name}", _fn, _fn, ((3, 4),), _dom)

UNARY = {
    "exp": "real", "log": "positive", "sqrt": "positive", "tanh": "real", "sigmoid": "real",
    "relu": "away0", "abs": "away0",
}
for _shape in [(), (3, 4)]:
    case(f"neg{_shape}", lambda x: -x, lambda x: -x, (_shape,))
    case(f"neg fn{_shape}", lambda x: T.neg(x), lambda x: torch.neg(x), (_shape,))
    case(f"neg method{_shape}", lambda x: x.neg(), lambda x: x.neg(), (_shape,))
case("abs builtin", lambda x: abs(x), lambda x: abs(x), ((3, 4),), "away0")
for _op, _dom in UNARY.items():
    for _shape in [(), (5,), (2, 3, 4)]:
        case(f"{_op}{_shape}", lambda x, _op=_op: getattr(x, _op)(), lambda x, _op=_op: getattr(x, _op)(),
             (_shape,), _dom)
case("sigmoid_large", lambda x: (x * 40.0).sigmoid(), lambda x: (x * 40.0).sigmoid(), ((4, 5),))
case("tanh_module_fn", lambda x: T.tanh(x) * T.exp(x), lambda x: torch.tanh(x) * torch.exp(x), ((3, 4),))

CLIPS = [((-0.5, 0.5), {}), ((), {"min": -0.3}), ((), {"max": 0.2}), ((-1.0, 1), {})]
for _args, _kw in CLIPS:
    case(f"clip{_args}{_kw}", lambda x, _a=_args, _k=_kw: x.clip(*_a, **_k),
         lambda x, _a=_args, _k=_kw: x.clip(*_a, **_k), ((4, 5),))
case("clamp", lambda x: x.clamp(-0.5, 0.5), lambda x: x.clamp(-0.5, 0.5), ((4, 5),))

TORCH_REDUCE = {"sum": "sum", "mean": "mean", "max": "amax", "min": "amin", "var": "var"}
AXES = [(None, False), (None, True), (0, False), (-1, True), ((0, 2), False), ((2, 0), True), (1, False),
        ((-1, -2, 0), False)]


def _th_reduce(op, x, axis, keepdim, **kw):
    dim = tuple(range(x.ndim)) if axis is None else axis
    return getattr(torch, TORCH_REDUCE[op])(x, dim=dim, keepdim=keepdim, **kw)


for _op in TORCH_REDUCE:
    for _axis, _keep in AXES:
        case(f"{_op} axis={_axis} keepdims={_keep}",
             lambda x, _op=_op, _a=_axis, _k=_keep: getattr(x, _op)(axis=_a, keepdims=_k),
             lambda x, _op=_op, _a=_axis, _k=_keep: _th_reduce(_op, x, _a, _k), ((2, 3, 4),))
    case(f"{_op} dim/keepdim", lambda x, _op=_op: getattr(x, _op)(dim=1, keepdim=True),
         lambda x, _op=_op: _th_reduce(_op, x, 1, True), ((2, 3, 4),))
    case(f"{_op} 1-d", lambda x, _op=_op: getattr(x, _op)(), lambda x, _op=_op: _th_reduce(_op, x, None, False),
         ((7,),))
    case(f"{_op} module fn", lambda x, _op=_op: getattr(T, _op)(x, -2),
         lambda x, _op=_op: _th_reduce(_op, x, -2, False), ((2, 3, 4),))
for _op in ("max", "min"):             # ties share the gradient evenly, like torch.amax / torch.amin
    for _axis in (None, 0, (1, 2), -1):
        case(f"{_op} ties axis={_axis}", lambda x, _op=_op, _a=_axis: getattr(x, _op)(axis=_a),
             lambda x, _op=_op, _a=_axis: _th_reduce(_op, x, _a, False), ((2, 3, 4),), "ties", smooth=False)
case("var correction=0", lambda x: x.var(axis=1, correction=0), lambda x: torch.var(x, dim=1, correction=0),
     ((3, 4),))
case("var unbiased=False", lambda x: x.var(dim=(0, 1), unbiased=False, keepdim=True),
     lambda x: torch.var(x, dim=(0, 1), unbiased=False, keepdim=True), ((3, 4, 2),))
case("var correction=2", lambda x: x.var(correction=2), lambda x: torch.var(x, correction=2), ((3, 4),))

MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                 ((1, 3, 4), (2, 4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((4,), (2, 4, 3)),
                 ((2, 3, 4), (4,)), ((1, 4), (4, 1))]
for _sa, _sb in MATMUL_SHAPES:
    case(f"matmul{_sa}{_sb}", lambda a, b: a @ b, lambda a, b: a @ b, (_sa, _sb))
case("matmul method", lambda a, b: a.matmul(b), lambda a, b: a.matmul(b), ((3, 4), (4, 2)))
case("rmatmul ndarray", lambda b: np.arange(12.0, dtype=np.float32).reshape(3, 4) @ b,
     lambda b: torch.arange(12.0, dtype=torch.float64).reshape(3, 4) @ b, ((4, 2),))

SHAPE_OPS = {
    "reshape": (lambda x: x.reshape(4, 6), lambda x: x.reshape(4, 6), (2, 3, 4)),
    "reshape tuple": (lambda x: x.reshape((6, -1)), lambda x: x.reshape((6, -1)), (2, 3, 4)),
    "reshape -1": (lambda x: x.reshape(-1), lambda x: x.reshape(-1), (2, 3, 4)),
    "reshape 0-d": (lambda x: x.reshape(1, 1), lambda x: x.reshape(1, 1), ()),
    "view": (lambda x: x.view(2, -1), lambda x: x.view(2, -1), (2, 3, 4)),
    "transpose": (lambda x: x.transpose(0, 2), lambda x: x.transpose(0, 2), (2, 3, 4)),
    "transpose neg": (lambda x: x.transpose(-1, 0), lambda x: x.transpose(-1, 0), (2, 3, 4)),
    "transpose default": (lambda x: x.transpose(), lambda x: x.transpose(-2, -1), (2, 3, 4)),
    "permute": (lambda x: x.permute(2, 0, 1), lambda x: x.permute(2, 0, 1), (2, 3, 4)),
    "permute tuple": (lambda x: x.permute((1, -1, 0)), lambda x: x.permute((1, -1, 0)), (2, 3, 4)),
    "T 2-d": (lambda x: x.T, lambda x: x.T, (3, 4)),
    "T 3-d": (lambda x: x.T, lambda x: x.permute(2, 1, 0), (2, 3, 4)),
    "mT": (lambda x: x.mT, lambda x: x.mT, (2, 3, 4)),
    "expand": (lambda x: x.expand(2, 3, 4), lambda x: x.expand(2, 3, 4), (3, 1)),
    "expand -1": (lambda x: x.expand(-1, 5), lambda x: x.expand(-1, 5), (3, 1)),
    "expand tuple": (lambda x: x.expand((2, 3, 4)), lambda x: x.expand((2, 3, 4)), (1, 4)),
    "broadcast_to": (lambda x: x.broadcast_to((2, 3, 4)), lambda x: x.broadcast_to((2, 3, 4)), (3, 1)),
    "broadcast_to module fn": (lambda x: T.broadcast_to(x, 2, 4), lambda x: torch.broadcast_to(x, (2, 4)), ()),
    "squeeze all": (lambda x: x.squeeze(), lambda x: x.squeeze(), (1, 3, 1, 4)),
    "squeeze 0": (lambda x: x.squeeze(0), lambda x: x.squeeze(0), (1, 3, 1, 4)),
    "squeeze -2": (lambda x: x.squeeze(-2), lambda x: x.squeeze(-2), (1, 3, 1, 4)),
    "squeeze tuple": (lambda x: x.squeeze((0, 2)), lambda x: x.squeeze((0, 2)), (1, 3, 1, 4)),
    "squeeze non-1": (lambda x: x.squeeze(1), lambda x: x.squeeze(1), (1, 3, 1, 4)),
    "unsqueeze 0": (lambda x: x.unsqueeze(0), lambda x: x.unsqueeze(0), (3, 4)),
    "unsqueeze -1": (lambda x: x.unsqueeze(-1), lambda x: x.unsqueeze(-1), (3, 4)),
    "unsqueeze 1": (lambda x: x.unsqueeze(1), lambda x: x.unsqueeze(1), (3, 4)),
    "flatten": (lambda x: x.flatten(), lambda x: x.flatten(), (2, 3, 4)),
    "flatten 1": (lambda x: x.flatten(1), lambda x: x.flatten(1), (2, 3, 4)),
    "flatten 0 1": (lambda x: x.flatten(0, 1), lambda x: x.flatten(0, 1), (2, 3, 4)),
    "flatten 0-d": (lambda x: x.flatten(), lambda x: x.flatten(), ()),
}
for _name, (_tt, _th, _shape) in SHAPE_OPS.items():
    case(_name, _tt, _th, (_shape,), exact="expand" not in _name and "broadcast" not in _name)

MASK = np.array([[True, False, True, False, False, True]] * 5)
INDICES = {
    "int": 2, "negative int": -1, "int pair": (1, 2), "ints to 0-d": (1, -1, 3),
    "slice": slice(1, 3), "slice step": (slice(None), slice(None, None, 2)), "slice open": (slice(2, None), 1),
    "None": (None, 1), "None middle": (slice(None), None, 2), "Ellipsis": (Ellipsis, 0),
    "Ellipsis None": (1, Ellipsis, None), "Ellipsis slice": (Ellipsis, slice(1, 4), 0),
    "bool mask all dims": np.array(np.arange(120).reshape(4, 5, 6) % 7 < 3),
    "bool mask dim 0": np.array([True, False, True, True]),
    "bool mask dims 1,2": (slice(None), MASK),
    "int array repeated": [0, 0, 2, 0],
    "int array negative": np.array([-1, 1, -1]),
    "int arrays paired": (np.array([0, 0, 3]), np.array([1, 1, 4])),
    "int array 2-d": (np.array([[0, 1], [1, 1]]),),
    "slice then int array": (slice(None), [2, 2, 0]),
    "int, list, slice": (1, [0, 0], slice(None)),
    "list, slice, list": ([0, 3], slice(1, 3), [5, 5]),
    "tensor index": Tensor([0, 0, 1]),
    "tensor in tuple": (slice(None), Tensor([4, 4])),
    "bool tensor": Tensor(np.array([False, True, True, False])),
}
for _name, _idx in INDICES.items():
    case(f"getitem {_name}", lambda x, _i=_idx: x[_i], lambda x, _i=_idx: x[_th_index(_i)], ((4, 5, 6),),
         exact=True)

COND = np.array([[True], [False], [True]])
case("cat axis=1", lambda a, b: T.cat([a, b], axis=1), lambda a, b: torch.cat([a, b], dim=1), ((2, 3), (2, 4)),
     exact=True)
case("cat dim=-1 three", lambda a, b, c: T.cat([a, b, c], dim=-1), lambda a, b, c: torch.cat([a, b, c], dim=-1),
     ((2, 1, 3), (2, 1, 2), (2, 1, 1)), exact=True)
case("concatenate axis 0", lambda a, b: T.concatenate((a, b)), lambda a, b: torch.cat((a, b)),
     ((1, 3), (2, 3)), exact=True)
case("cat same tensor", lambda a: T.cat([a, a * 2.0, a], axis=0), lambda a: torch.cat([a, a * 2.0, a]), ((2, 3),))
for _axis in (0, 1, -1):
    case(f"stack axis={_axis}", lambda a, b, c, _x=_axis: T.stack([a, b, c], axis=_x),
         lambda a, b, c, _x=_axis: torch.stack([a, b, c], dim=_x), ((2, 3),) * 3, exact=True)
case("stack dim=", lambda a, b: T.stack((a, b), dim=2), lambda a, b: torch.stack((a, b), dim=2),
     ((2, 3), (2, 3)), exact=True)
case("split int", lambda x: T.cat([p * (i + 1.0) for i, p in enumerate(T.split(x, 2, dim=1))], dim=1),
     lambda x: torch.cat([p * (i + 1.0) for i, p in enumerate(torch.split(x, 2, dim=1))], dim=1), ((3, 5),))
case("split sizes", lambda x: T.cat([p * (i + 1.0) for i, p in enumerate(x.split([1, 3, 1], axis=1))], dim=1),
     lambda x: torch.cat([p * (i + 1.0) for i, p in enumerate(x.split([1, 3, 1], dim=1))], dim=1), ((3, 5),))
case("split one piece used", lambda x: x.split([1, 3, 1], dim=1)[1], lambda x: x.split([1, 3, 1], dim=1)[1],
     ((3, 5),), exact=True)
case("split axis 0 last piece", lambda x: T.split(x, 3)[-1], lambda x: torch.split(x, 3)[-1], ((7, 2),),
     exact=True)
case("where", lambda a, b: T.where(COND, a, b), lambda a, b: torch.where(torch.from_numpy(COND), a, b),
     ((3, 4), (3, 4)), exact=True)
case("where broadcast", lambda a, b: T.where(COND, a, b), lambda a, b: torch.where(torch.from_numpy(COND), a, b),
     ((3, 4), (4,)))
case("where scalar b", lambda a: T.where(Tensor(COND), a, 0.0),
     lambda a: torch.where(torch.from_numpy(COND), a, 0.0), ((3, 4),), exact=True)
case("where scalar a", lambda b: T.where(COND, 1.5, b), lambda b: torch.where(torch.from_numpy(COND), 1.5, b),
     ((1, 4),))
case("masked_fill", lambda a: a.masked_fill(MASK[:3, :4], -2.0),
     lambda a: a.masked_fill(torch.from_numpy(MASK[:3, :4]), -2.0), ((3, 4),), exact=True)
case("masked_fill broadcast mask", lambda a: T.masked_fill(a, Tensor(MASK[0, :4]), 7),
     lambda a: a.masked_fill(torch.from_numpy(MASK[0, :4]), 7), ((3, 4),), exact=True)
case("masked_fill -inf", lambda a: a.masked_fill(MASK[:3, :4], float("-inf")),
     lambda a: a.masked_fill(torch.from_numpy(MASK[:3, :4]), float("-inf")), ((3, 4),), exact=True, smooth=False)
case("composite", lambda a, b, c: ((a @ b).tanh() * c).sum(axis=1).mean() + (a * a).max(),
     lambda a, b, c: ((a @ b).tanh() * c).sum(dim=1).mean() + (a * a).amax(), ((3, 4), (4, 5), (5,)))
case("diamond", lambda x: (lambda a, b: a * b + a)(x * 2.0, x.exp()),
     lambda x: (lambda a, b: a * b + a)(x * 2.0, x.exp()), ((3,),))
case("used twice", lambda x: x * x + x @ x + T.cat([x, x]).sum(),
     lambda x: x * x + x @ x + torch.cat([x, x]).sum(), ((4, 4),))

SMOOTH = sorted(n for n, c in CASES.items() if c[5])


# ---------------------------------------------------------------------------------------------
# Parity with PyTorch, gradcheck, float32

@needs_torch
@pytest.mark.parametrize("name", list(CASES))
def test_value_and_gradient_match_torch(name):
    tt_fn, th_fn, shapes, domain, exact, _ = CASES[name]
    run_parity(tt_fn, th_fn, _inputs(shapes, domain), exact=exact)


@pytest.mark.parametrize("name", SMOOTH)
def test_gradcheck(name):
    tt_fn, _, shapes, domain, _, _ = CASES[name]
    assert gradcheck(tt_fn, [Tensor(a, dtype=np.float64) for a in _inputs(shapes, domain)])


@pytest.mark.parametrize("name", list(CASES))
def test_float32_stays_float32(name):
    tt_fn, _, shapes, domain, _, _ = CASES[name]
    xs = [Tensor(a, requires_grad=True) for a in _inputs(shapes, domain)]
    assert all(x.dtype == np.float32 for x in xs)
    out = tt_fn(*xs)
    assert out.dtype == np.float32
    out.backward(np.ones(out.shape, dtype=np.float32))
    for x in xs:
        assert x.grad.dtype == np.float32 and x.grad.shape == x.shape


def test_rules_compute_in_float32(monkeypatch):
    "No rule builds float64 temporaries for float32 inputs (the engine's final cast would hide them)."
    seen = {}

    def spy(op, rule):
        def wrapped(g, *saved):
            grads = rule(g, *saved)
            seen.setdefault(op, set()).update(str(np.asarray(gi).dtype) for gi in grads if gi is not None)
            return grads
        return wrapped

    for op, rule in list(DERIVATIVES.items()):
        monkeypatch.setitem(DERIVATIVES, op, spy(op, rule))
    for name in CASES:
        tt_fn, _, shapes, domain, _, _ = CASES[name]
        xs = [Tensor(a, requires_grad=True) for a in _inputs(shapes, domain)]
        out = tt_fn(*xs)
        out.backward(np.ones(out.shape, dtype=np.float32))
    assert {"add", "mul", "matmul", "max", "maximum", "rpow_scalar", "getitem"} <= set(seen)
    wrong = {op: dtypes for op, dtypes in seen.items() if dtypes != {"float32"}}
    assert not wrong, f"rules returning non-float32 gradients for float32 inputs: {wrong}"


# ---------------------------------------------------------------------------------------------
# Points where the derivative has a convention: PyTorch's is the reference

EDGE = np.array([0.0, 1.5, -2.0, 0.0, 0.5, -0.5])


@needs_torch
@pytest.mark.parametrize("fn", [lambda x: x.relu(), lambda x: x.abs(), lambda x: x.clip(-0.5, 0.5),
                                lambda x: x.clip(min=0.0), lambda x: x.clip(max=-0.5), lambda x: x.sqrt(),
                                lambda x: x ** 2, lambda x: x ** 3, lambda x: x ** 1.7, lambda x: x ** -1,
                                lambda x: x ** 0.5, lambda x: x.max(), lambda x: x.min()],
                         ids=["relu", "abs", "clip", "clip_min", "clip_max", "sqrt", "pow2", "pow3", "pow1.7",
                              "pow-1", "pow0.5", "max", "min"])
def test_kinks_and_boundaries_match_torch(fn):
    with np.errstate(all="ignore"):
        run_parity(fn, fn, [EDGE])


@needs_torch
def test_a_parity_failure_names_the_input_where_and_by_how_much(monkeypatch):
    monkeypatch.setitem(DERIVATIVES, "relu", lambda g, a: (g * (a >= 0),))     # relu'(0) = 1; PyTorch's is 0
    with pytest.raises(AssertionError) as info:
        run_parity(lambda x: x.relu(), lambda x: x.relu(), [EDGE])
    assert re.fullmatch(r"gradient of input 0 \(x\): 2 of 6 values differ from PyTorch; worst at index \([03],\), "
                        r"where x = 0: got -?\d\.\d+, PyTorch 0 \(abs/rel error \d\.\d+ > 1e-10\)", str(info.value)), info.value
    with pytest.raises(AssertionError, match=r"^forward: 1 of 2 values differ from PyTorch; worst at index \(1,\), "
                                             r"where a = 2, b = 3: got 7, PyTorch 6 \(abs/rel error 0.167 > 1e-10\)$"):
        run_parity(lambda a, b: a * b + (a * 0 + np.array([0.0, 1.0])), lambda a, b: a * b,
                   [np.array([1.0, 2.0]), np.array([4.0, 3.0])])


@needs_torch
def test_pow_with_zero_exponent_at_zero_matches_torch():
    # d/dx x**0 is 0 everywhere in PyTorch, also at x = 0 (0 * 0**-1 would be nan)
    with np.errstate(all="ignore"):
        run_parity(lambda x: x ** 0, lambda x: x ** 0, [EDGE])
        run_parity(lambda a, b: a ** b, lambda a, b: a ** b,
                   [np.array([0.0, 0.0, 2.0, 0.0]), np.array([0.0, 2.0, 0.0, 1.0])])


@needs_torch
def test_rpow_with_zero_base_matches_torch():
    # PyTorch: d/dx 0**x = 0 where x >= 0 (not 0 * log 0 = nan)
    with np.errstate(all="ignore"):
        run_parity(lambda x: 0.0 ** x, lambda x: 0.0 ** x, [np.array([0.0, 1.5, 2.0, -1.0])])


@needs_torch
def test_division_by_python_zero_gives_inf_like_torch():
    with np.errstate(all="ignore"):
        run_parity(lambda x: x / 0, lambda x: x / 0, [np.array([1.0, -2.0, 0.5])])
        run_parity(lambda x: x / 0.0, lambda x: x / 0.0, [np.array([1.0, -2.0, 0.5])])


def test_getitem_repeated_indices_accumulate():
    x = Tensor(np.arange(5.0), requires_grad=True)
    (x[[0, 0, 0, 3]] * Tensor([1.0, 2.0, 4.0, 8.0])).sum().backward()
    assert x.grad.tolist() == [7.0, 0.0, 0.0, 8.0, 0.0]
    y = Tensor(np.zeros((2, 3)), requires_grad=True)
    y[np.array([1, 1]), np.array([2, 2])].sum().backward()
    assert y.grad.tolist() == [[0, 0, 0], [0, 0, 2.0]]


# ---------------------------------------------------------------------------------------------
# Property-based: random broadcastable shapes, random axes, random indices

BINARY_PROPERTY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum"]


@needs_torch
@HYPOTHESIS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=3),
       op=st.sampled_from(BINARY_PROPERTY), seed=st.integers(0, 2 ** 16))
def test_binary_ops_broadcast_like_torch(shapes, op, seed):
    tt_fn, th_fn, domain = BINARY[op]
    domain = (domain,) * 2 if isinstance(domain, str) else domain
    a, b = (_array(s, d, seed + i) for i, (s, d) in enumerate(zip(shapes.input_shapes, domain)))
    run_parity(tt_fn, th_fn, [a, b], seed=seed)


@st.composite
def _reduction(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                          hnp.valid_tuple_axes(len(shape), min_size=1)))
    return shape, axis, draw(st.booleans()), draw(st.sampled_from(sorted(TORCH_REDUCE))), draw(st.booleans())


@needs_torch
@HYPOTHESIS
@given(spec=_reduction(), seed=st.integers(0, 2 ** 16))
def test_reductions_over_random_axes_like_torch(spec, seed):
    shape, axis, keepdims, op, ties = spec
    x = _array(shape, "ties" if ties else "real", seed)
    axes = range(len(shape)) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    n = int(np.prod([shape[i] for i in axes]))
    kw = {"correction": 1 if n > 1 else 0} if op == "var" else {}
    run_parity(lambda t: getattr(t, op)(axis=axis, keepdims=keepdims, **kw),
               lambda t: _th_reduce(op, t, axis, keepdims, **kw), [x], seed=seed)


@HYPOTHESIS
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=5))
def test_basic_indexing_gradient_is_a_scatter(data, shape):
    idx = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    x = Tensor(_array(shape), dtype=np.float64, requires_grad=True)
    out = x[idx]
    assert np.array_equal(out.data, x.data[idx])
    g = np.arange(1.0, out.size + 1).reshape(out.shape)
    out.backward(g)
    expected = np.zeros(shape)
    expected[idx] = g
    assert np.array_equal(x.grad.data, expected)


@HYPOTHESIS
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
def test_integer_array_indexing_gradient_accumulates(data, shape):
    idx = data.draw(hnp.integer_array_indices(shape, result_shape=hnp.array_shapes(min_dims=1, max_dims=2,
                                                                                    max_side=6)))
    x = Tensor(_array(shape), dtype=np.float64, requires_grad=True)
    out = x[idx]
    assert np.array_equal(out.data, x.data[idx])
    g = np.arange(1.0, out.size + 1).reshape(out.shape)
    out.backward(g)
    expected = np.zeros(shape)
    np.add.at(expected, idx, g)
    assert np.array_equal(x.grad.data, expected)


# ---------------------------------------------------------------------------------------------
# The engine

@needs_torch
def test_diamond_graph_accumulates_like_torch():
    def f(x, w):
        h = x @ w                        # h feeds three branches
        a, b = h.tanh(), h * h
        return (a * b + h).sum(axis=0) * (a - b).mean()
    run_parity(f, f, [_array((3, 4)), _array((4, 2), seed=1)])


def test_shared_subgraph_between_two_outputs():
    x = Tensor([1.0, -2.0, 3.0], dtype=np.float64, requires_grad=True)
    y = x * 2.0
    a, b = y.sum(), (y * y).sum()
    a.backward(retain_graph=True)       # y's node must survive for b
    b.backward()
    assert np.array_equal(x.grad.data, 2.0 + 8.0 * x.data)


def test_exponentially_many_paths_visit_each_node_once():
    x = Tensor([1.0], dtype=np.float64, requires_grad=True)
    y = x
    for _ in range(60):
        y = y + y                        # 2**60 paths from y to x, 60 nodes
    y.backward(np.ones(1))
    assert x.grad.item() == 2.0 ** 60


def _chain(n):
    x = Tensor([1.0], dtype=np.float64, requires_grad=True)
    y = x
    for _ in range(n):
        y = y * 1.0
    return x, y


@pytest.mark.slow
def test_100k_node_chain_backward_without_recursion_error():
    x = Tensor([0.3], dtype=np.float64, requires_grad=True)
    y, expected, v = x, 1.0, 0.3
    for _ in range(25_000):              # 4 nodes per step: 100k nodes
        y = (y * 0.5).tanh() * 2.0 + 1e-4
        t = np.tanh(v * 0.5)
        expected *= 1.0 - t * t
        v = t * 2.0 + 1e-4
    y.backward(np.ones(1))
    assert abs(y.item() - v) < 1e-12 and abs(x.grad.item() - expected) <= 1e-9 * abs(expected)


@pytest.mark.slow
def test_dropping_a_deep_unbackwarded_graph_does_not_crash():
    x, y = _chain(100_000)
    del y                                # deallocates a 100k-deep Tensor -> Node -> Tensor chain
    gc.collect()
    assert x.grad is None


@pytest.mark.slow
def test_backward_time_is_linear_in_graph_size():
    def backward_seconds(n):
        x, y = _chain(n)
        start = time.perf_counter()
        y.backward(np.ones(1))
        seconds = time.perf_counter() - start
        assert x.grad.item() == 1.0
        return seconds
    small = min(backward_seconds(10_000) for _ in range(3))
    large = min(backward_seconds(100_000) for _ in range(2))
    assert large / small < 30, f"10x more nodes took {large / small:.1f}x longer (quadratic would be 100x)"


def test_retain_graph():
    x = Tensor([1.0, 2.0], dtype=np.float64, requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [6.0, 12.0]     # three backward passes accumulate
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        y.backward()
    z = (x * 3.0).sum()
    z.backward()
    with pytest.raises(RuntimeError, match="second time"):
        z.backward(retain_graph=True)


def test_backward_frees_saved_activations():
    x = Tensor(np.ones((50, 50)), requires_grad=True)
    h = x.exp()
    loss = (h * h).sum()                 # mul saves h.data
    saved = weakref.ref(h.data)
    del h
    gc.collect()
    assert saved() is not None           # the graph keeps the activation alive ...
    loss.backward()
    gc.collect()
    assert saved() is None               # ... until backward frees it


def test_no_grad_records_nothing_and_keeps_no_reference():
    x = Tensor(np.ones((4, 4)), requires_grad=True)
    y = x.exp() * 2.0
    assert y.requires_grad and y._node is not None      # with grad: a graph holding x's values

    a = Tensor(np.ones((4, 4)), requires_grad=True)
    data_ref = weakref.ref(a.data)
    with no_grad():
        assert not is_grad_enabled()
        out = (a.exp() * a).relu() @ a
        out = out.sum(axis=0).reshape(2, 2).T[0] + a[1:, 0].max()
    assert is_grad_enabled()
    assert not out.requires_grad and out._node is None and out.is_leaf and out.grad_fn is None
    del a
    gc.collect()
    assert data_ref() is None, "an output computed under no_grad keeps its input alive"
    with pytest.raises(RuntimeError, match="does not require grad"):
        out.sum().backward()


def test_no_grad_input_tensor_is_collectable():
    a = Tensor(np.ones(3), requires_grad=True)
    tensor_ref = weakref.ref(a)
    with no_grad():
        out = a * 3.0 + a.exp()
    del a
    gc.collect()
    assert tensor_ref() is None and out.shape == (3,)


def test_grad_mode_switches():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        with enable_grad():
            assert is_grad_enabled() and (x * 2)._node is not None
        assert (x * 2)._node is None
    assert is_grad_enabled()

    @no_grad()
    def infer(t): return t * 3

    assert infer(x)._node is None and not infer(x).requires_grad and is_grad_enabled()
    with set_grad_enabled(False):
        assert (x + 1)._node is None
    assert is_grad_enabled()
    set_grad_enabled(False)
    try:
        assert not is_grad_enabled() and (x + 1)._node is None
    finally:
        set_grad_enabled(True)
    with pytest.raises(ZeroDivisionError):       # the mode is restored when the block raises
        with no_grad():
            1 / 0
    assert is_grad_enabled()


def test_grad_mode_is_per_thread():
    x = Tensor([1.0], requires_grad=True)
    seen = {}

    def worker():
        seen["enabled"] = is_grad_enabled()
        seen["recorded"] = (x * 2)._node is not None

    with no_grad():
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert seen == {"enabled": True, "recorded": True}


def test_requires_grad_propagation_and_detach():
    a, b = Tensor([1.0, 2.0]), Tensor([3.0, 4.0], requires_grad=True)
    assert not (a * a).requires_grad and (a * a)._node is None
    c = a * b
    assert c.requires_grad and not c.is_leaf and c.grad_fn == "mul"
    d = c.detach()
    assert d.is_leaf and not d.requires_grad and np.shares_memory(d.data, c.data)
    (d * b).sum().backward()
    assert b.grad.tolist() == [3.0, 8.0] and a.grad is None
    e = Tensor([1.0]).requires_grad_()
    assert e.requires_grad and e.requires_grad_(False) is e and not e.requires_grad


def test_leaf_gradients_accumulate_and_never_alias():
    w = Tensor([1.0, 2.0], requires_grad=True)
    (w * 3).sum().backward()
    first = w.grad
    (w * w).sum().backward()
    assert w.grad is first and w.grad.tolist() == [5.0, 7.0]
    a, b = Tensor([1.0], requires_grad=True), Tensor([1.0], requires_grad=True)
    s = a + b
    s.backward(np.array([2.0], dtype=np.float32))
    a.grad.data *= 10
    assert b.grad.item() == 2.0
    x = Tensor([1.0, 1.0], requires_grad=True)
    x.sum().backward()                    # the sum rule returns a read-only broadcast view
    x.grad.data += 1                      # the leaf's .grad must own writable memory
    assert x.grad.tolist() == [2.0, 2.0]


def test_backward_on_a_leaf_and_with_explicit_gradient():
    x = Tensor([1.0, 2.0], requires_grad=True)
    x.backward(Tensor([3.0, 4.0]))
    assert x.grad.tolist() == [3.0, 4.0]
    y = Tensor(np.ones((2, 3)), dtype=np.float64, requires_grad=True)
    (y * 2.0).backward(np.arange(6.0).reshape(2, 3))
    assert np.array_equal(y.grad.data, 2.0 * np.arange(6.0).reshape(2, 3))


@needs_torch
def test_grad_function_matches_torch_autograd_grad():
    xs = [_array((3, 4)), _array((4,), seed=1)]
    a, b = (Tensor(v, dtype=np.float64, requires_grad=True) for v in xs)
    ta, tb = (torch.tensor(v, requires_grad=True) for v in xs)
    h, th = a * b, ta * tb
    out, ref = (h.tanh() * h).sum(), (th.tanh() * th).sum()
    ga, gh, gb = grad(out, [a, h, b])
    ra, rh, rb = torch.autograd.grad(ref, [ta, th, tb])
    for mine, theirs in [(ga, ra), (gh, rh), (gb, rb)]:
        assert_match(mine.data, theirs.numpy())
    assert a.grad is None and b.grad is None
    unused = Tensor([1.0], requires_grad=True)
    c = Tensor([2.0], requires_grad=True)
    assert grad((c * 2).sum(), [c, unused])[1] is None      # unused input: None (torch: allow_unused=True)
    assert grad((c * 2).sum(), c).tolist() == [2.0]


def test_comparisons_are_not_differentiable():
    x = Tensor([1.0, -2.0, 3.0], requires_grad=True)
    for mask in (x > 0, x >= 0, x < 1, x <= 1, x == 3.0, x != 3.0, 0 < x, x > Tensor([0.0])):
        assert mask.dtype == np.bool_ and not mask.requires_grad and mask._node is None
        with pytest.raises(TypeError, match="only floating-point tensors can require gradients.*bool"):
            mask.requires_grad = True
    y = T.where(x > 0, x, x * 0.1)      # a mask still routes gradients through where
    y.sum().backward()
    assert np.allclose(x.grad.data, [1.0, 0.1, 1.0])


def test_integer_tensors_cannot_require_grad():
    for make in (lambda: Tensor([1, 2], requires_grad=True), lambda: T.zeros(2, dtype=np.int64, requires_grad=True),
                 lambda: Tensor([True], requires_grad=True), lambda: T.arange(3).requires_grad_(),
                 lambda: T.tensor(np.arange(3, dtype=np.int32), requires_grad=True)):
        with pytest.raises(TypeError, match="only floating-point tensors can require gradients; this tensor has dtype"):
            make()
    i = Tensor([1, 2])
    with pytest.raises(TypeError, match="dtype int64"):
        i.requires_grad = True
    assert not i.requires_grad
    x = Tensor([0.5, 1.5], requires_grad=True)
    (x * i).sum().backward()            # an integer operand is fine; it just gets no gradient
    assert x.grad.tolist() == [1.0, 2.0] and i.grad is None


def test_backward_errors():
    with pytest.raises(RuntimeError, match=r"backward\(\) without a gradient needs a scalar output; this tensor "
                                           r"has shape \(2,\)"):
        (Tensor([1.0, 2.0], requires_grad=True) * 2).backward()
    with pytest.raises(RuntimeError, match=r"does not require grad and has no graph.*requires_grad=True.*no_grad"):
        Tensor([1.0]).sum().backward()
    with pytest.raises(ValueError, match=r"backward\(\): gradient has shape \(3,\) but the output has shape \(2,\)"):
        (Tensor([1.0, 2.0], requires_grad=True) * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="grad\\(\\): the output does not require grad"):
        grad(Tensor([1.0]).sum(), Tensor([1.0], requires_grad=True))


def test_op_without_rule_is_reported(monkeypatch):
    monkeypatch.delitem(DERIVATIVES, "exp")
    assert T.exp(Tensor([1.0])).dtype == np.float32        # nothing needs a gradient: no rule needed
    with pytest.raises(RuntimeError, match="op 'exp' has no derivative rule"):
        T.exp(Tensor([1.0], requires_grad=True))


def test_gradcheck_reports_a_wrong_rule(monkeypatch):
    monkeypatch.setitem(DERIVATIVES, "sigmoid", lambda g, out: (g * out,))
    with pytest.raises(GradcheckError, match=r"gradcheck failed for input 0 at index \(\d+,\) \(value -?[\d.]+\): analytic .* numeric"):
        gradcheck(lambda t: t.sigmoid(), [Tensor([0.5, -1.0, 2.0])])
    assert gradcheck(lambda t: t.sigmoid(), [Tensor([0.5, -1.0, 2.0])], raise_exception=False) is False


def test_gradcheck_treats_nan_as_a_mismatch(monkeypatch):
    monkeypatch.setitem(DERIVATIVES, "tanh", lambda g, out: (g * np.nan,))
    with pytest.raises(GradcheckError, match="analytic nan"):
        gradcheck(lambda t: t.tanh(), [Tensor([0.5, -1.0])])


def test_public_imports():
    import tinytorch
    from tinytorch import Tensor as PublicTensor, no_grad as public_no_grad
    assert PublicTensor is Tensor and public_no_grad is no_grad
    for name in ("manual_seed", "enable_grad", "set_grad_enabled", "is_grad_enabled", "gradcheck", "tensor",
                 "zeros", "ones", "randn", "rand", "arange"):
        assert hasattr(tinytorch, name), name
    assert (PublicTensor([1.0], requires_grad=True) * 2).sum()._node is not None   # autograd is loaded


# ---------------------------------------------------------------------------------------------
# Moved from the notebook: tests of the given code (gradcheck, backward's checks, no_grad) and the long chain

def test_gradcheck_catches_a_wrong_rule():
    saved = DERIVATIVES["tanh"]
    try:
        DERIVATIVES["tanh"] = lambda g, out: (g * (1 - out),)       # a plausible mistake
        with pytest.raises(GradcheckError, match="gradcheck failed for input 0 at index"):
            gradcheck(T.tanh, [Tensor(np.random.default_rng(3).standard_normal(3), dtype=np.float64)])
    finally:
        DERIVATIVES["tanh"] = saved


def test_backward_error_messages():
    with pytest.raises(RuntimeError, match=r"needs a scalar output; this tensor has shape \(2,\)"):
        (Tensor([1.0, 2.0], requires_grad=True) * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).sum().backward()
    with pytest.raises(ValueError, match=r"gradient has shape \(3,\) but the output has shape \(2,\)"):
        (Tensor([1.0, 2.0], requires_grad=True) * 2).backward(np.ones(3))


def test_no_grad_records_nothing():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        y = x * 2
        assert not is_grad_enabled()
        with enable_grad():
            z = x * 2
    assert y._node is None and not y.requires_grad and z._node is not None and is_grad_enabled()

    @no_grad()
    def f(t): return t * 3
    assert f(x)._node is None and is_grad_enabled()
    with set_grad_enabled(False):
        assert (x * 1)._node is None
    assert is_grad_enabled()


def test_long_chain_is_iterative_and_linear():
    x = Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.sum().backward()                                            # no RecursionError
    assert x.grad.item() == 1.0



def test_module_01_checks_the_saved_values_every_rule_reads():
    "Module 01's check_record calls name, for every op of this module, the values its rule takes, in order."
    import ast
    import inspect
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "modules" / "01_tensor" / "tensor.py").read_text(encoding="utf-8")
    checked = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "check_record":
            checked.setdefault(node.args[1].value, set()).add(tuple(k.arg for k in node.keywords))
    rules = {op: rule for op, rule in DERIVATIVES.items() if rule.__module__ == "tinytorch.core.autograd"}
    assert sorted(set(rules) - set(checked)) == [], "ops whose record contract module 01 does not check"
    for op, rule in rules.items():
        wanted = tuple(inspect.signature(rule).parameters)[1:]
        assert checked[op] == {wanted}, f"{op}: module 01 checks saved values {checked[op]}, the rule takes {wanted}"
