"""Activations against PyTorch: values and gradients in float64, stability, float32, layer forms.

Tolerances (float64): every activation matches PyTorch to 1e-13 absolute (measured: <= 7.4e-15
for values and gradients of magnitude up to ~16, i.e. a few ulps); erf in float64 is within 1 ulp
of math.erf. float32 results are compared with PyTorch's float32 at float32 resolution; erf in
float32 is a rational approximation within 3.8e-7 of the true erf.
"""
import math

import numpy as np
import pytest

from tinytorch.core.tensor import Tensor
from tinytorch.core.autograd import gradcheck
from tinytorch.core import activations as A

torch = pytest.importorskip("torch")
F = torch.nn.functional

ATOL64 = 1e-13


def _inputs(shape, seed=0, scale=3.0):
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    x.flat[:4] = [0.0, -0.0, 1e-300, -40.0]            # a kink, signed zero, a tiny and a far-left value
    return x


def _compare(ours, theirs, x, seed=1, atol=ATOL64, rtol=0.0, dtype=np.float64):
    "Forward values and gradients (for a random upstream gradient) of ours(x) vs theirs(x)."
    g = np.random.default_rng(seed).standard_normal(x.shape)
    t = Tensor(x, dtype=dtype, requires_grad=True)
    y = ours(t)
    y.backward(g.astype(dtype))
    tx = torch.tensor(x.astype(dtype), requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.tensor(g.astype(dtype)))
    assert y.dtype == dtype and t.grad.dtype == dtype
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=rtol, atol=atol, equal_nan=True)
    np.testing.assert_allclose(t.grad.data, tx.grad.numpy(), rtol=rtol, atol=atol, equal_nan=True)


ELEMENTWISE = {
    "relu": (A.relu, torch.relu),
    "sigmoid": (A.sigmoid, torch.sigmoid),
    "tanh": (A.tanh, torch.tanh),
    "silu": (A.silu, F.silu),
    "gelu": (A.gelu, F.gelu),
    "gelu_tanh": (lambda t: A.gelu(t, approximate="tanh"), lambda t: F.gelu(t, approximate="tanh")),
    "erf": (A.erf, torch.erf),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_matches_torch_float64(name):
    ours, theirs = ELEMENTWISE[name]
    _compare(ours, theirs, _inputs((4, 5, 6)))


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_gradcheck(name):
    ours, _ = ELEMENTWISE[name]
    assert gradcheck(ours, [Tensor(np.linspace(-3.1, 2.9, 16).reshape(4, 4), dtype=np.float64)])


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_float32_matches_torch(name):
    ours, theirs = ELEMENTWISE[name]
    # float32: one ulp of tanh u near -1 moves GELU_tanh' by up to |x|(1 + 0.134 x^2) * 1.2e-7, hence atol 5e-6
    _compare(ours, theirs, _inputs((8, 64), seed=2), atol=5e-6, rtol=2e-6, dtype=np.float32)


def test_erf_float64_within_one_ulp_of_math_erf():
    x = np.concatenate([np.linspace(-7, 7, 100_001), np.random.default_rng(3).standard_normal(50_000) * 2,
                        [0.84375, 1.25, 1 / 0.35, 6.0, 5.999999999999999, 1e-310, 28.0, -30.0]])
    ref = np.array([math.erf(v) for v in x])
    got = A.erf(Tensor(x, dtype=np.float64)).data
    assert np.all(np.abs(got - ref) <= np.spacing(np.abs(ref)) + 1e-320)
    assert np.max(np.abs(got - ref)) <= 1.2e-16


def test_erf_float32_accuracy():
    x = np.linspace(-6, 6, 200_001).astype(np.float32)
    ref = torch.erf(torch.tensor(x, dtype=torch.float64)).numpy()
    got = A.erf(Tensor(x)).data
    assert got.dtype == np.float32
    assert np.max(np.abs(got - ref)) < 4.5e-7                   # measured 3.8e-7 (6.4 float32 ulps near 1)
    assert np.all(np.abs(got) <= 1.0)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
def test_softmax_matches_torch_any_axis(which, axis):
    ours = getattr(A, which)
    theirs = getattr(torch, which)
    _compare(lambda t: ours(t, axis), lambda t: theirs(t, dim=axis), _inputs((3, 4, 5), seed=4))
    _compare(lambda t: ours(t, dim=axis), lambda t: theirs(t, dim=axis), _inputs((3, 4, 5), seed=5))


@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
def test_softmax_stability_and_masks_match_torch(which):
    x = np.array([[1e4, -1e4, 0.0, 3.0],
                  [-1e4, -1e4 + 1.0, -1e4 - 2.0, -1e4],
                  [0.5, -np.inf, -np.inf, 1.5],                   # partly masked
                  [-np.inf, -np.inf, -np.inf, -np.inf],           # fully masked: NaN, as in PyTorch
                  [1e4, 1e4, -1e4, 0.0]])
    ours, theirs = getattr(A, which), getattr(torch, which)
    _compare(lambda t: ours(t, -1), lambda t: theirs(t, dim=-1), x)
    y = ours(Tensor(x.astype(np.float32)), -1).data
    assert y.dtype == np.float32 and np.all(np.isfinite(y[[0, 1, 4]])) and np.all(np.isnan(y[3]))


def test_softmax_float32_forward_and_backward():
    x = _inputs((6, 65), seed=6).astype(np.float32)
    for ours, theirs in [(A.softmax, torch.softmax), (A.log_softmax, torch.log_softmax)]:
        _compare(lambda t: ours(t), lambda t: theirs(t, dim=-1), x, atol=1e-6, rtol=2e-6, dtype=np.float32)


def test_erf_is_one_node_and_no_grad_records_nothing():
    # gelu, silu and the softmaxes are one node each only as module 17's kernels, tested there
    from tinytorch.core.autograd import no_grad
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = A.erf(x)
    assert y.grad_fn == "erf" and y._node.inputs == (x,)
    with no_grad():
        for fn in (A.gelu, lambda t: A.gelu(t, "tanh"), A.silu, A.softmax, A.log_softmax, A.erf):
            assert fn(x)._node is None


def test_layers_in_a_sequential_match_torch():
    from tinytorch.core.layers import Linear, Sequential
    net = Sequential(Linear(3, 5), A.GELU(approximate="tanh"), Linear(5, 4), A.SiLU(), Linear(4, 2), A.LogSoftmax())
    tnet = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(5, 4),
                               torch.nn.SiLU(), torch.nn.Linear(4, 2), torch.nn.LogSoftmax(dim=-1)).double()
    with torch.no_grad():
        for i in (0, 2, 4):
            tnet[i].weight.copy_(torch.tensor(net[i].weight.data))
            tnet[i].bias.copy_(torch.tensor(net[i].bias.data))
    x = np.random.default_rng(7).standard_normal((4, 3)).astype(np.float32)
    out = net(Tensor(x))
    ref = tnet(torch.tensor(x, dtype=torch.float64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, ref.detach().numpy(), atol=1e-5)
    out.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(net[0].weight.grad.data, tnet[0].weight.grad.numpy(), atol=1e-5)


def test_layer_reprs_match_torch():
    assert repr(A.GELU()) == repr(torch.nn.GELU())
    assert repr(A.GELU(approximate="tanh")) == repr(torch.nn.GELU(approximate="tanh"))
    assert repr(A.ReLU()) == repr(torch.nn.ReLU()) and repr(A.SiLU()) == repr(torch.nn.SiLU())
    assert repr(A.Softmax(dim=-1)) == repr(torch.nn.Softmax(dim=-1))
    assert repr(A.LogSoftmax(dim=1)) == repr(torch.nn.LogSoftmax(dim=1))
