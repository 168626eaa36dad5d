# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 Activations
# > The nonlinearities between layers, and the softmax that turns scores into probabilities.
#
# A stack of linear layers is still one linear map. What lets a network represent anything
# else is the elementwise nonlinearity between the layers, the *activation*. This module
# collects the ones a transformer needs:
#
# | function | formula | used in |
# |---|---|---|
# | `relu` | max(x, 0) | classic MLPs |
# | `sigmoid`, `tanh` | 1 / (1 + e⁻ˣ), tanh x | gates, old RNNs |
# | `silu` | x · σ(x) | SwiGLU feed-forward blocks (LLaMA) |
# | `gelu` | x · Φ(x), Φ the normal CDF | GPT-2, BERT, nanoGPT |
# | `softmax`, `log_softmax` | eˣⁱ / Σⱼ eˣʲ and its log | attention weights, the output distribution |
#
# `relu`, `sigmoid` and `tanh` are already ops of the engine (module 01 computes them,
# module 03 differentiates them), and so is `erf` once this module defines it. The others
# are written here in their **textbook form**: composed from those ops, so autograd derives
# their backward passes. Module 18 gives GELU, SiLU, softmax and log-softmax a fused kernel
# each (one graph node, a backward rule written by hand), tested equal to the code here: the
# composed form records five to ten nodes and keeps each one's temporary array alive until
# backward, which makes it several times slower on the large activations of a transformer.
#
# Every function has a parameter-free layer form (`ReLU()`, `GELU(approximate="tanh")`,
# `Softmax(dim=-1)`, ...) that can be placed in a `Sequential` like any layer.


# %% [markdown]
# **How to test and complete.** Every group of functions is followed by its tests. From the
# shell, `tito module test 4` runs this notebook's tests and `tito module complete 4`
# tests your notebook, exports it into the `tinytorch` package and runs the package tests.

# %%
#| default_exp core.activations

# %%
#| export
import math
import numpy as np
from tinytorch.core.tensor import Tensor, record, replaceable
from tinytorch.core import tensor as _T
from tinytorch.core.autograd import derivative

# %% [markdown]
# ## Checking inputs
#
# Activations accept floating-point tensors only: an integer tensor would silently become
# float64 inside `np.exp`, and it cannot carry a gradient anyway. Softmax needs an axis; we
# accept PyTorch's `dim=` as well and name the tensor's shape when the axis does not exist.

# %%
#| export
def float_data(x, op):
    "The array inside `x`, after checking that `x` is a floating-point Tensor."
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    if x.data.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point tensor, got dtype {x.data.dtype}")
    return x.data


def softmax_axis(x, axis, dim, op):
    "Normalise axis/dim to a non-negative axis of `x`, or raise naming the shape."
    if dim is not None: axis = dim
    if not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor of shape {x.shape}")
    return int(axis) % x.ndim

# %% [markdown]
# ## ReLU, sigmoid, tanh
#
# These three are engine ops; here they get their place in the activation namespace. Their
# conventions are PyTorch's: relu'(0) = 0, and σ(x) is computed as ½(1 + tanh(x/2)), which
# never overflows (1 / (1 + e⁻ˣ) overflows e⁻ˣ for x < -88 in float32). That form is exact
# algebra; its absolute error is a few 1e-16 in float64, though for x < -30, where
# σ(x) < 1e-13, its *relative* error grows (1 + tanh cancels).

# %%
#| export
def relu(x):
    "max(x, 0) elementwise; the gradient at 0 is 0, as in PyTorch."
    return _T.relu(x)


def sigmoid(x):
    "1 / (1 + exp(-x)) elementwise, computed as 0.5 * (1 + tanh(x / 2))."
    return _T.sigmoid(x)


def tanh(x):
    "Hyperbolic tangent elementwise."
    return _T.tanh(x)

# %%
def test_relu_sigmoid_tanh():
    x = Tensor([-3.0, -0.5, 0.0, 0.5, 3.0], dtype=np.float64, requires_grad=True)
    assert np.array_equal(relu(x).data, [0, 0, 0, 0.5, 3.0])
    assert np.allclose(sigmoid(x).data, 1 / (1 + np.exp(-x.data)), rtol=1e-15, atol=0)
    assert np.allclose(tanh(x).data, np.tanh(x.data), rtol=1e-15, atol=0)
    (relu(x) + sigmoid(x) + tanh(x)).sum().backward()
    s = 1 / (1 + np.exp(-x.data))
    assert np.allclose(x.grad.data, (x.data > 0) + s * (1 - s) + 1 - np.tanh(x.data) ** 2, rtol=1e-14)

# %% [markdown]
# ## The error function
#
# The exact GELU needs Φ(x) = ½(1 + erf(x/√2)), and NumPy has no `erf` (SciPy does, but
# tinytorch depends on NumPy only; `math.erf` works on one Python float at a time). So we
# write a vectorised one, with one method per dtype:
#
# - **float64**: the method of fdlibm's `s_erf.c` (Sun Microsystems, 1993), the `erf` of
#   FreeBSD, musl and Go's standard library. The range is cut into |x| < 0.84375 (a rational
#   function of x²), [0.84375, 1.25) (a rational function of |x| − 1 around erf(1)), [1.25, 6)
#   (erfc(x) = e^(−x²−0.5625+R/S) / x with R/S rational in 1/x²) and |x| ≥ 6 (erf = ±1).
#   Rather than gather each range's elements with a boolean mask, which costs more than the
#   arithmetic itself, we evaluate every piece on the whole array (inputs clipped into the
#   piece's range, so nothing overflows) and blend the pieces with 0/1 masks. The result is
#   within 1 ulp of `math.erf` (the tests check it).
# - **float32**: one rational function erf(x) ≈ x·P(x²)/Q(x²) on |x| ≤ 4 (beyond which erf
#   rounds to ±1 in float32), with P of degree 6 and Q of degree 5, fitted against
#   high-precision values of erf (least squares weighted for relative error). Evaluated in
#   float32 it is within a few float32 ulps of the true erf, and it needs a fraction of the
#   passes over the data that the float64 method does: the exact GELU is on the training hot
#   path of GPTs that use it.
#
# Each rational function is evaluated by Horner's rule, `p0 + z·(p1 + z·(p2 + …))`. The
# coefficients are Python floats, which NumPy treats as weak scalars: a float32 array stays
# float32 throughout.

# %%
#| export
# fdlibm s_erf.c coefficients. Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
# Developed at SunSoft, a Sun Microsystems, Inc. business. Permission to use, copy, modify, and
# distribute this software is freely granted, provided that this notice is preserved.
_ERX = 8.45062911510467529297e-01                      # erf(1) rounded to float32
_ERF_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
           -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_ERF_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
           1.32494738004321644526e-04, -3.96022827877536812320e-06)
_ERF_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
           3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
           -2.16637559486879084300e-03)
_ERF_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
           1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)
_ERF_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
           -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
           -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_ERF_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
           6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
           6.57024977031928170135e+00, -6.04244152148580987438e-02)
_ERF_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
           -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
           -4.83519191608651397019e+02)
_ERF_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
           3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
           -2.24409524465858183362e+01)
# float32: erf(x) ~ x P(x^2) / Q(x^2) on |x| <= 4, fitted for tinytorch against mpmath's erf.
_ERF32_P = (1.128379169, 0.1852041507, 0.05431695983, 0.003849640935, 0.0003796064314,
            4.684686096e-06, -1.320181318e-08)
_ERF32_Q = (1.0, 0.4974663187, 0.1139587343, 0.01546213815, 0.001307572782, 6.310973372e-05)


def _horner(z, coeffs):
    "coeffs[0] + coeffs[1] z + coeffs[2] z^2 + ... in the dtype of z."
    acc = np.full_like(z, coeffs[-1])
    for c in coeffs[-2::-1]:
        acc *= z
        acc += c
    return acc


def _rational(z, p, q):
    out = _horner(z, p)
    out /= _horner(z, q)
    return out


def _erf_float64(x):
    ax = np.abs(x)
    a = np.clip(ax, 0.0, 0.84375)                       # |x| < 0.84375: erf = a + a R(a^2)
    small = _rational(a * a, _ERF_PP, _ERF_QQ)
    small *= a
    small += a
    s = np.clip(ax, 0.84375, 1.25)                      # [0.84375, 1.25): erf = erx + P(s)/Q(s), s = |x| - 1
    s -= 1.0
    mid = _rational(s, _ERF_PA, _ERF_QA)
    mid += _ERX
    a = np.clip(ax, 1.25, 6.0)                          # [1.25, 6): erf = 1 - exp(-a^2 - 0.5625 + R/S) / a
    w = a * a
    np.reciprocal(w, out=w)
    near = a < 1 / 0.35
    rs = _rational(w, _ERF_RA, _ERF_SA) * near + _rational(w, _ERF_RB, _ERF_SB) * ~near
    hi = (a.view(np.uint64) & np.uint64(0xFFFFFFFF00000000)).view(np.float64)   # hi * hi is exact
    e = hi * hi
    e += 0.5625
    np.negative(e, out=e)
    np.exp(e, out=e)
    e *= np.exp((hi - a) * (hi + a) + rs)
    e /= a
    tail = np.subtract(1.0, e, out=e)
    # Blend the pieces. A NaN input makes every piece NaN, and NaN * 0 stays NaN.
    out = small * (ax < 0.84375)
    out += mid * ((ax >= 0.84375) & (ax < 1.25))
    out += tail * ((ax >= 1.25) & (ax < 6.0))
    out += ax >= 6.0
    return np.copysign(out, x, out=out)


def _erf_float32(x):
    a = np.clip(x, -4.0, 4.0)
    z = a * a
    out = _rational(z, _ERF32_P, _ERF32_Q)
    out *= a
    return np.clip(out, -1.0, 1.0, out=out)


def erf_array(x):
    "erf of a floating-point array, in its dtype (float16 is computed in float32)."
    if x.dtype == np.float64: return _erf_float64(x)
    if x.dtype == np.float32: return _erf_float32(x)
    if x.dtype.kind == "f": return _erf_float32(x.astype(np.float32)).astype(x.dtype)
    raise TypeError(f"erf: expected a floating-point array, got dtype {x.dtype}")

# %% [markdown]
# As a tensor op, erf is differentiable: d/dx erf(x) = (2/√π) e^(−x²).

# %%
#| export
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def erf(x):
    "The error function (2/sqrt(pi)) * integral of exp(-t^2) from 0 to x, elementwise."
    data = float_data(x, "erf")
    return record("erf", erf_array(data), (x,), (data,))


@derivative("erf")
def _erf_backward(g, x):
    "erf saved `x` (an array): return `(g * 2/sqrt(pi) * exp(-x**2),)`, an array of x's shape and dtype."
    ### BEGIN SOLUTION
    d = x * x
    np.negative(d, out=d)
    np.exp(d, out=d)
    d *= _TWO_OVER_SQRT_PI
    d *= g
    return (d,)
    ### END SOLUTION

# %%
import math as _math
import pytest
from tinytorch.core.autograd import gradcheck

def test_erf_float64_is_accurate_to_one_ulp():
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.84375, 1.25, 1 / 0.35, 6.0, -6.0, 1e-300, -0.0]])
    ref = np.array([_math.erf(v) for v in x])
    got = erf(Tensor(x, dtype=np.float64)).data
    assert got.dtype == np.float64 and np.max(np.abs(got - ref)) <= 1.2e-16
    assert np.all(np.abs(got - ref) <= np.spacing(np.abs(ref)) + 1e-300)        # at most 1 ulp
    special = erf(Tensor([np.inf, -np.inf, np.nan], dtype=np.float64)).data
    assert special[0] == 1.0 and special[1] == -1.0 and np.isnan(special[2])

def test_erf_float32():
    x = np.linspace(-6, 6, 20001).astype(np.float32)
    got = erf(Tensor(x)).data
    ref = np.array([_math.erf(float(v)) for v in x])
    assert got.dtype == np.float32 and np.max(np.abs(got - ref)) < 4.5e-7 and np.abs(got).max() <= 1.0
    assert np.isnan(erf(Tensor([np.nan])).data[0]) and erf(Tensor([np.inf, -np.inf])).tolist() == [1.0, -1.0]
    assert erf(Tensor(x.astype(np.float16), dtype=np.float16)).dtype == np.float16

def test_erf_gradient():
    assert gradcheck(erf, [Tensor(np.linspace(-3, 3, 13), dtype=np.float64)])

# %% [markdown]
# ## GELU
#
# The Gaussian Error Linear Unit weighs its input by the probability that a standard normal
# variable is below it: GELU(x) = x·Φ(x) = ½x(1 + erf(x/√2)). Its derivative is
#
# $$\mathrm{GELU}'(x) = \Phi(x) + x\,\varphi(x), \qquad \varphi(x) = e^{-x^2/2}/\sqrt{2\pi}.$$
#
# GPT-2 used a cheaper approximation, and checkpoints trained with it expect it:
#
# $$\mathrm{GELU}_{\tanh}(x) = \tfrac12 x\,(1 + \tanh u), \quad u = \sqrt{2/\pi}\,(x + 0.044715\,x^3).$$
#
# `gelu(x, approximate="none")` is the exact form (PyTorch's default), `approximate="tanh"`
# the approximation. Both are a few lines of tensor ops (`erf`, `tanh`, `*`, `+`), and
# autograd derives the derivative. Write x³ as `x * x * x`: a general power is much slower
# than two multiplications in float32.

# %%
#| export
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_GELU_C = 0.044715


def check_approximate(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


@replaceable("gelu")
def gelu(x, approximate="none"):
    """x * Phi(x) elementwise; `approximate='tanh'` gives GPT-2's tanh approximation.

    Returns 0.5 * x * (1 + erf(x / sqrt(2))), or with 'tanh' 0.5 * x * (1 + tanh(u)) with
    u = sqrt(2/pi) * (x + 0.044715 x^3): a tensor of x's shape and dtype, built from tensor ops."""
    float_data(x, "gelu")
    check_approximate(approximate)
    ### BEGIN SOLUTION
    if approximate == "none":
        return 0.5 * x * (1.0 + erf(x * _INV_SQRT_2))
    u = _SQRT_2_OVER_PI * (x + _GELU_C * x * x * x)
    return 0.5 * x * (1.0 + u.tanh())
    ### END SOLUTION

# %%
def test_gelu_values():
    x = np.linspace(-6, 6, 121)
    exact = gelu(Tensor(x, dtype=np.float64)).data
    assert np.max(np.abs(exact - np.array([0.5 * v * (1 + _math.erf(v / _math.sqrt(2))) for v in x]))) < 1e-15
    approx = gelu(Tensor(x, dtype=np.float64), approximate="tanh").data
    ref = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    assert np.max(np.abs(approx - ref)) < 1e-15
    assert np.max(np.abs(approx - exact)) < 1e-3                      # the approximation is close

def test_gelu_gradients():
    x = Tensor(np.linspace(-4, 4, 17), dtype=np.float64)
    assert gradcheck(gelu, [x])
    assert gradcheck(lambda t: gelu(t, approximate="tanh"), [x])

def test_gelu_errors():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'exact'"):
        gelu(Tensor([1.0]), approximate="exact")
    with pytest.raises(TypeError, match="gelu: expected a floating-point tensor, got dtype int64"):
        gelu(Tensor([1, 2]))
    with pytest.raises(TypeError, match="gelu: expected a Tensor, got ndarray"):
        gelu(np.ones(2))

# %% [markdown]
# ## SiLU
#
# SiLU (also called swish) is x·σ(x), the gate of the SwiGLU feed-forward block: one
# multiplication of two tensors we already have.

# %%
#| export
@replaceable("silu")
def silu(x):
    "x * sigmoid(x) elementwise: a tensor of x's shape and dtype."
    float_data(x, "silu")
    ### BEGIN SOLUTION
    return x * sigmoid(x)
    ### END SOLUTION

# %%
def test_silu():
    x = np.linspace(-20, 20, 81)
    assert np.max(np.abs(silu(Tensor(x, dtype=np.float64)).data - x / (1 + np.exp(-x)))) < 1e-14
    assert gradcheck(silu, [Tensor(np.linspace(-5, 5, 11), dtype=np.float64)])

# %% [markdown]
# ## Softmax and log-softmax
#
# softmax(x)ᵢ = eˣⁱ / Σⱼ eˣʲ along one axis. Computed literally it overflows: e⁸⁹ is already
# infinite in float32. Subtracting the row maximum m first changes nothing mathematically
# (the factor e⁻ᵐ cancels) and makes every exponent ≤ 0, so the largest term is exactly 1 and
# the sum lies in [1, n]. Logits of ±10⁴ are then no problem.
#
# log-softmax is x − m − log Σⱼ e^(xⱼ−m). Computing `log(softmax(x))` instead would turn any
# probability below ~1e-38 (float32) into log 0 = −∞.
#
# **Masked entries.** An entry of −∞ (a masked position in attention) gets probability 0 and
# log-probability −∞, and its neighbours are unaffected. A row that is *entirely* −∞ has no
# meaningful distribution: as in PyTorch, softmax and log-softmax return NaN for that row
# (−∞ − (−∞) is undefined), and so do its gradients. We compute that NaN without NumPy
# warnings. Loud NaN is deliberate: a fully masked row is almost always a bug in the mask.
#
# The maximum is a constant shift, so it is taken from `x.detach()`: no gradient flows
# through it, and none needs to, since the result does not depend on it.

# %%
#| export
@replaceable("softmax")
def softmax(x, axis=-1, *, dim=None):
    """exp(x) / sum(exp(x)) along `axis` (or `dim`), computed stably.

    Returns e / e.sum(axis, keepdims=True) with e = exp(x - m), m the maximum along the axis
    taken from x.detach(); a row of only -inf gives NaN, without a NumPy warning inside
    `np.errstate(invalid="ignore")`."""
    float_data(x, "softmax")
    axis = softmax_axis(x, axis, dim, "softmax")
    ### BEGIN SOLUTION
    with np.errstate(invalid="ignore"):        # a row of only -inf gives NaN, like PyTorch
        e = (x - x.detach().max(axis=axis, keepdims=True)).exp()
        return e / e.sum(axis=axis, keepdims=True)
    ### END SOLUTION


@replaceable("log_softmax")
def log_softmax(x, axis=-1, *, dim=None):
    """log(softmax(x)) along `axis` (or `dim`), computed without forming softmax.

    Returns z - log(exp(z).sum(axis, keepdims=True)) with z = x - m, m as in `softmax`."""
    float_data(x, "log_softmax")
    axis = softmax_axis(x, axis, dim, "log_softmax")
    ### BEGIN SOLUTION
    with np.errstate(invalid="ignore"):
        z = x - x.detach().max(axis=axis, keepdims=True)
        return z - z.exp().sum(axis=axis, keepdims=True).log()
    ### END SOLUTION

# %%
import warnings

def _reference_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)

def test_softmax_values_any_axis():
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    for axis in (0, 1, 2, -1):
        p = softmax(Tensor(x, dtype=np.float64), axis).data
        assert np.allclose(p, np.exp(x) / np.exp(x).sum(axis=axis, keepdims=True), rtol=1e-14, atol=0)
        assert np.allclose(log_softmax(Tensor(x, dtype=np.float64), dim=axis).data, np.log(p), rtol=1e-14, atol=1e-15)

def test_softmax_gradients():
    x = Tensor(np.random.default_rng(1).standard_normal((3, 4)), dtype=np.float64)
    for axis in (0, 1):
        assert gradcheck(lambda t: softmax(t, axis), [x])
        assert gradcheck(lambda t: log_softmax(t, axis), [x])

def test_softmax_is_stable():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4 + 1.0, -1e4 - 2.0]], dtype=np.float32)
    p = softmax(Tensor(x)).data
    assert p.dtype == np.float32 and np.all(np.isfinite(p))
    assert np.allclose(p[0], [1, 0, 0]) and np.allclose(p[1], _reference_softmax(np.array([0.0, 1.0, -2.0]), 0))
    lp = log_softmax(Tensor(x)).data
    assert np.allclose(lp[0], [0.0, -2e4, -1e4]) and np.all(np.isfinite(lp))

def test_masked_rows():
    x = Tensor([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]], dtype=np.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # no NumPy RuntimeWarning either
        p, lp = softmax(x), log_softmax(x)
        (p * Tensor([1.0, 2.0, 3.0], dtype=np.float64)).sum().backward()
    assert np.allclose(p.data[0], [1 / (1 + np.e), 0.0, np.e / (1 + np.e)]) and lp.data[0, 1] == -np.inf
    assert np.all(np.isnan(p.data[1])) and np.all(np.isnan(lp.data[1]))      # fully masked: NaN, as in PyTorch
    assert np.all(np.isfinite(x.grad.data[0])) and x.grad.data[0, 1] == 0.0 and np.all(np.isnan(x.grad.data[1]))

def test_softmax_errors():
    with pytest.raises(ValueError, match=r"softmax: axis 2 is out of range for a tensor of shape \(2, 3\)"):
        softmax(Tensor(np.ones((2, 3))), 2)
    with pytest.raises(ValueError, match=r"log_softmax: axis -3 is out of range"):
        log_softmax(Tensor(np.ones((2, 3))), dim=-3)
    with pytest.raises(TypeError, match="softmax: expected a floating-point tensor, got dtype int64"):
        softmax(Tensor([1, 2]))

def test_float32_stays_float32():
    x = Tensor(np.random.default_rng(2).standard_normal((4, 5)), requires_grad=True)
    fns = [lambda t: gelu(t), lambda t: gelu(t, approximate="tanh"), silu, erf, softmax, log_softmax,
           relu, sigmoid, tanh]
    for fn in fns:
        x.grad = None
        y = fn(x)
        assert y.dtype == np.float32
        (y * y).sum().backward()
        assert x.grad.dtype == np.float32 and np.all(np.isfinite(x.grad.data))

# %% [markdown]
# ## Layer forms
#
# The activations have no parameters, so their layer forms are small classes that hold the
# options and call the function: `GELU(approximate="tanh")(x)` is `gelu(x, "tanh")`. They
# behave like layers (a `forward` method, calling the object runs it, a PyTorch-style
# `repr`), so they can sit in a `Sequential` between `Linear` layers (module 05).

# %%
#| export
class _Activation:
    "A parameter-free layer: calling it applies `forward`."
    def __call__(self, x): return self.forward(x)
    def extra_repr(self): return ""
    def __repr__(self): return f"{type(self).__name__}({self.extra_repr()})"


class ReLU(_Activation):
    def forward(self, x): return relu(x)


class Sigmoid(_Activation):
    def forward(self, x): return sigmoid(x)


class Tanh(_Activation):
    def forward(self, x): return tanh(x)


class SiLU(_Activation):
    def forward(self, x): return silu(x)


class GELU(_Activation):
    def __init__(self, approximate="none"):
        check_approximate(approximate)
        self.approximate = approximate
    def forward(self, x): return gelu(x, self.approximate)
    def extra_repr(self): return f"approximate={self.approximate!r}"


class Softmax(_Activation):
    def __init__(self, dim=-1): self.dim = dim
    def forward(self, x): return softmax(x, self.dim)
    def extra_repr(self): return f"dim={self.dim}"


class LogSoftmax(_Activation):
    def __init__(self, dim=-1): self.dim = dim
    def forward(self, x): return log_softmax(x, self.dim)
    def extra_repr(self): return f"dim={self.dim}"

# %%
def test_layer_forms():
    x = Tensor(np.random.default_rng(3).standard_normal((2, 3)))
    pairs = [(ReLU(), relu(x)), (Sigmoid(), sigmoid(x)), (Tanh(), tanh(x)), (SiLU(), silu(x)),
             (GELU(), gelu(x)), (GELU("tanh"), gelu(x, "tanh")), (Softmax(0), softmax(x, 0)),
             (LogSoftmax(), log_softmax(x))]
    for layer, expected in pairs:
        assert np.array_equal(layer(x).data, expected.data)
    assert repr(GELU(approximate="tanh")) == "GELU(approximate='tanh')" and repr(ReLU()) == "ReLU()"
    assert repr(Softmax(dim=1)) == "Softmax(dim=1)"
    with pytest.raises(ValueError, match="got 'fast'"):
        GELU("fast")

# %%
if __name__ == "__main__":
    try:
        x = Tensor(np.linspace(-3, 3, 7))
        for layer in (ReLU(), GELU(), GELU(approximate="tanh"), SiLU()):
            print(f"{layer!r:28}", np.round(layer(x).data, 4))
        print("softmax:", softmax(Tensor([[1.0, 2.0, 3.0], [0.0, -np.inf, 0.0]])))
    except NotImplementedError as e:
        print("skipped until the stubs above are written:", e)

# %% [markdown]
# ## Experiments to try
#
# 1. Replace `gelu` by `x * sigmoid(1.702 * x)` (another known approximation) and compare it with
#    the exact form on `linspace(-4, 4, 81)`: the largest difference is about 0.02, far more than
#    the tanh form's.
# 2. Call `softmax` on `Tensor([1000.0, 1001.0])` and then on the same values computed literally
#    as `exp(x) / exp(x).sum()`: the stable form gives [0.269, 0.731], the literal one NaN (inf /
#    inf).
# 3. Run `gradcheck(silu, [x])` with `x` in float32 instead of float64: finite differences in
#    float32 are too coarse, and the check fails even though the rule is right.

# %% [markdown]
# ## Run this module's tests
#
# The cell below runs every test of this notebook in the kernel and prints PASS, FAIL (with
# the reason) or TODO per test; `tito module complete 4` runs them from the shell.

# %%
from tito.notebook import run_tests

if __name__ == "__main__":
    run_tests()
