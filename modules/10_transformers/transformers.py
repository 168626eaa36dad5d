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
# # 10 Transformers
# > Normalisation, feed-forward networks, the GPT-2 block and model, its sizes, Hugging Face interop, and the LLaMA-style TransformerLM.
#
# Everything so far was a part; this module assembles the machine. A decoder-only
# transformer is a stack of identical *blocks* between an embedding at the bottom and a
# projection back to the vocabulary at the top. Each block lets every position read from
# the positions before it (attention, module 09) and then transforms each position on its
# own (the feed-forward network), and each of the two sub-layers is wrapped as
# `x = x + sublayer(norm(x))`: a normalisation first ("pre-norm"), a residual connection
# around it.
#
# We build two members of the family, both exactly as their papers and reference code
# define them, and test both against independent implementations:
#
# - **GPT-2** (Radford et al., 2019): LayerNorm, learned absolute positions, a GELU MLP with
#   4x expansion, biases everywhere, the output projection *tied* to the token embedding.
#   Its weights load from and export to the Hugging Face layout, and its logits and
#   gradients equal `transformers.GPT2LMHeadModel`'s.
# - **TransformerLM** in the LLaMA style of Stanford CS336: RMSNorm, rotary positions,
#   a SwiGLU feed-forward network, no biases, an untied output projection, with the
#   parameter names CS336's tests use.
#
# The normalisations and feed-forward networks are fused ops with hand-written backward
# passes: they run on every position in every layer, so they decide much of the speed.

# %%
#| default_exp models.transformer

# %%
#| export
import math
from collections import OrderedDict
from dataclasses import dataclass, asdict, fields

import numpy as np
from tinytorch.core.tensor import Tensor, record, get_rng, _wrap, cat, DEFAULT_DTYPE
from tinytorch.core.autograd import derivative, no_grad, is_grad_enabled
from tinytorch.core.layers import Module, Parameter, Linear, Dropout, ModuleList, StateDictError, linear, affine_rows
from tinytorch.core.losses import cross_entropy
from tinytorch.text.embeddings import Embedding, PositionalEmbedding, RotaryEmbedding, TokenIdRangeError
from tinytorch.core.attention import MultiHeadAttention, KVCache, fused_qkv_attention

# %% [markdown]
# ## LayerNorm
#
# LayerNorm (Ba et al., 2016) normalises each position's feature vector to zero mean and unit
# variance, then applies a learned scale $\gamma$ and shift $\beta$:
#
# $$\mu = \tfrac1D\textstyle\sum_i x_i,\qquad \sigma^2 = \tfrac1D\sum_i (x_i-\mu)^2,\qquad
# \hat x_i = \frac{x_i-\mu}{\sqrt{\sigma^2+\varepsilon}},\qquad y_i = \gamma_i \hat x_i + \beta_i .$$
#
# The variance is the biased one (divide by $D$), as in PyTorch. Written with module 01's
# ops this is a dozen graph nodes, each with its own temporaries; as one fused op it is a
# few passes over the data. The backward pass follows from $\hat x$ being invariant to
# shifting and scaling $x$: with $r = 1/\sqrt{\sigma^2+\varepsilon}$ and
# $\hat g = g\odot\gamma$,
#
# $$\frac{\partial L}{\partial x} = r\left(\hat g - \overline{\hat g} - \hat x\,\overline{\hat g\odot\hat x}\right),
# \qquad \frac{\partial L}{\partial \gamma} = \textstyle\sum_n g\odot\hat x, \qquad \frac{\partial L}{\partial \beta} = \sum_n g,$$
#
# where the bars are means over the normalised features and $\sum_n$ runs over all other
# positions. Both means are matrix-vector products: $\overline{\hat g} = (g\,\gamma)/D$ and
# $\overline{\hat g\odot\hat x} = ((g\odot\hat x)\,\gamma)/D$, and $g\odot\hat x$ is needed for
# $\partial L/\partial\gamma$ anyway, so the backward pass never forms $\hat g$ on its own.
# Inputs of lower precision than float32 (float16) are normalised in float32 and
# the result is cast back, as PyTorch does. Row sums and means go through BLAS (a
# matrix-vector product with a vector of ones), which is several times faster than
# `ndarray.sum` on a single core (PERF_NOTES).

# %%
#| export
def _compute_dtype(dtype):
    "float32 for float16 and float32 inputs, float64 for float64: norms never compute below float32."
    return np.result_type(dtype, np.float32)


def _norm_rows(x, normalized_shape, op):
    "Check `normalized_shape` against x's trailing dims; return x.data as (N, D) in the compute dtype."
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    if x.shape[len(x.shape) - len(shape):] != shape or len(shape) > x.ndim:
        raise ValueError(f"{op}: input of shape {x.shape} does not end with normalized_shape {shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point input, got dtype {x.dtype}")
    d = int(np.prod(shape))
    return x.data.reshape(-1, d).astype(_compute_dtype(x.dtype), copy=False), d


def _row_mean(a, d):
    "Mean of each row of a 2-D array, through BLAS: a @ ones / d, as an (N, 1) column."
    return (a @ np.full(a.shape[1], 1.0 / d, dtype=a.dtype))[:, None]


def _col_sum(a):
    "Sum over rows of a 2-D array through BLAS: ones @ a."
    return np.ones(a.shape[0], dtype=a.dtype) @ a


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    "Normalise over the trailing `normalized_shape` dims, then scale by `weight` and shift by `bias` (one fused op)."
    ### BEGIN SOLUTION
    x2, d = _norm_rows(x, normalized_shape, "layer_norm")
    xhat = x2 - _row_mean(x2, d)
    rstd = _row_mean(xhat * xhat, d)
    rstd += eps
    np.sqrt(rstd, out=rstd)
    np.divide(1.0, rstd, out=rstd)
    xhat *= rstd
    out = xhat * weight.data.reshape(-1) if weight is not None else xhat.copy()
    if bias is not None: out += bias.data.reshape(-1)
    out = out.reshape(x.shape).astype(x.dtype, copy=False)
    inputs = (x,) + tuple(t for t in (weight, bias) if t is not None)
    return record("layer_norm", out, inputs, (xhat, rstd, None if weight is None else weight.data.reshape(-1),
                                              None if weight is None else weight.shape,
                                              None if bias is None else bias.shape, x.shape))
    ### END SOLUTION


@derivative("layer_norm")
def _layer_norm_backward(g, xhat, rstd, w, w_shape, b_shape, x_shape):
    ### BEGIN SOLUTION
    d = xhat.shape[1]
    g2 = g.reshape(xhat.shape).astype(xhat.dtype, copy=False)
    gamma = np.ones(d, dtype=xhat.dtype) if w is None else w
    p = g2 * xhat                                          # g ⊙ x̂, which dL/dγ needs anyway
    grads = [None] if w is None else [None, _col_sum(p).reshape(w_shape)]
    gamma_d = gamma / d
    mean_g = (g2 @ gamma_d)[:, None]                       # mean of ĝ = g ⊙ γ: a product with γ itself
    mean_gx = (p @ gamma_d)[:, None]                       # mean of ĝ ⊙ x̂
    gx = g2 * gamma
    gx -= mean_g
    gx -= np.multiply(xhat, mean_gx, out=p)                # p's memory is free again once dL/dγ is taken
    gx *= rstd
    grads[0] = gx.reshape(x_shape)
    if b_shape is not None: grads.append(_col_sum(g2).reshape(b_shape))
    return tuple(grads)
    ### END SOLUTION


def _param_shape(normalized_shape):
    return (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)


class LayerNorm(Module):
    "Layer normalisation over the trailing `normalized_shape` dims (weight 1, bias 0 at init), as torch.nn.LayerNorm."
    def __init__(self, normalized_shape, eps=1e-5, bias=True):
        super().__init__()
        self.normalized_shape, self.eps = _param_shape(normalized_shape), eps
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=DEFAULT_DTYPE))
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=DEFAULT_DTYPE)) if bias else None

    def forward(self, x):
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, bias={self.bias is not None}"

# %% [markdown]
# The tests below check the forward pass against the formula, the backward pass against
# finite differences (`gradcheck`, float64), and the float16 path. `tests/test_10_transformers.py`
# compares values and gradients with `torch.nn.functional.layer_norm`.

# %%
import pytest
from tinytorch.core.tensor import manual_seed
from tinytorch.core.autograd import gradcheck

def _t(*shape, seed=0, dtype=np.float64, scale=1.0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape) * scale, dtype=dtype)

def test_layer_norm_formula_and_gradcheck():
    x, w, b = _t(2, 3, 5), _t(5, seed=1), _t(5, seed=2)
    mu = x.data.mean(-1, keepdims=True)
    ref = (x.data - mu) / np.sqrt(x.data.var(-1, keepdims=True) + 1e-5) * w.data + b.data
    assert np.allclose(layer_norm(x, 5, w, b).data, ref, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda x, w, b: layer_norm(x, 5, w, b), [x, w, b])
    assert gradcheck(lambda x: layer_norm(x, (3, 5)), [x])                 # two normalised dims, no affine
    ln = LayerNorm(5)
    assert ln.weight.dtype == np.float32 and ln(Tensor(np.ones((2, 5)))).dtype == np.float32
    assert [n for n, _ in LayerNorm(5, bias=False).named_parameters()] == ["weight"]

def test_layer_norm_half_computes_in_float32():
    x = Tensor(np.random.default_rng(0).standard_normal((4, 64)) * 100 + 1000, dtype=np.float16)
    y = layer_norm(x, 64)
    ref = layer_norm(Tensor(x.data, dtype=np.float64), 64).data
    assert y.dtype == np.float16 and np.abs(y.data - ref).max() < 5e-3

def test_layer_norm_errors():
    with pytest.raises(ValueError, match=r"layer_norm: input of shape \(2, 4\) does not end with normalized_shape \(5,\)"):
        LayerNorm(5)(Tensor(np.ones((2, 4))))

# %% [markdown]
# ## RMSNorm
#
# RMSNorm (Zhang and Sennrich, 2019), used by LLaMA, drops the mean and the shift: it only
# rescales each vector by its root mean square,
#
# $$y_i = \gamma_i\,\frac{x_i}{\mathrm{RMS}(x)},\qquad \mathrm{RMS}(x) = \sqrt{\tfrac1D\textstyle\sum_i x_i^2 + \varepsilon}.$$
#
# It is cheaper than LayerNorm and works as well in practice. The gradient is LayerNorm's
# without the mean term: with $r = 1/\mathrm{RMS}(x)$, $\hat x = r x$ and $\hat g = g\odot\gamma$,
# $\partial L/\partial x = r(\hat g - \hat x\,\overline{\hat g\odot\hat x})$.
#
# The squares of float16 activations overflow easily (65504 is float16's largest value, so
# any $|x_i| > 256$ overflows $x_i^2$), which is why CS336 and LLaMA upcast to float32 inside
# the norm and cast the result back: we do the same.

# %%
#| export
def rms_norm(x, normalized_shape, weight=None, eps=1e-5):
    "x / sqrt(mean(x^2) + eps) * weight over the trailing `normalized_shape` dims, computed in >= float32 (one fused op)."
    ### BEGIN SOLUTION
    x2, d = _norm_rows(x, normalized_shape, "rms_norm")
    rstd = _row_mean(x2 * x2, d)
    rstd += eps
    np.sqrt(rstd, out=rstd)
    np.divide(1.0, rstd, out=rstd)
    xhat = x2 * rstd
    out = xhat * weight.data.reshape(-1) if weight is not None else xhat.copy()
    out = out.reshape(x.shape).astype(x.dtype, copy=False)
    inputs = (x,) if weight is None else (x, weight)
    return record("rms_norm", out, inputs, (xhat, rstd, None if weight is None else weight.data.reshape(-1),
                                            None if weight is None else weight.shape, x.shape))
    ### END SOLUTION


@derivative("rms_norm")
def _rms_norm_backward(g, xhat, rstd, w, w_shape, x_shape):
    ### BEGIN SOLUTION
    d = xhat.shape[1]
    g2 = g.reshape(xhat.shape).astype(xhat.dtype, copy=False)
    gxhat = g2 * w if w is not None else g2.copy()
    proj = _row_mean(gxhat * xhat, d)
    gxhat -= xhat * proj
    gxhat *= rstd
    if w is None: return (gxhat.reshape(x_shape),)
    return gxhat.reshape(x_shape), _col_sum(g2 * xhat).reshape(w_shape)
    ### END SOLUTION


class RMSNorm(Module):
    "Root-mean-square normalisation over the last dim with a learned gain (initialised to 1)."
    def __init__(self, d_model, eps=1e-5):
        super().__init__()
        self.d_model, self.eps = d_model, eps
        self.weight = Parameter(np.ones(d_model, dtype=DEFAULT_DTYPE))

    def forward(self, x):
        return rms_norm(x, self.d_model, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.d_model}, eps={self.eps}"

# %%
def test_rms_norm_formula_and_gradcheck():
    x, w = _t(2, 3, 6), _t(6, seed=1)
    ref = x.data / np.sqrt((x.data ** 2).mean(-1, keepdims=True) + 1e-5) * w.data
    assert np.allclose(rms_norm(x, 6, w).data, ref, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda x, w: rms_norm(x, 6, w), [x, w])
    assert gradcheck(lambda x: rms_norm(x, (3, 6)), [x])
    norm = RMSNorm(6)
    assert [n for n, _ in norm.named_parameters()] == ["weight"] and np.array_equal(norm.weight.data, np.ones(6))

def test_rms_norm_half_does_not_overflow():
    x = Tensor(np.full((2, 8), 1000.0), dtype=np.float16)          # x^2 = 1e6 overflows float16
    y = RMSNorm(8)(x)
    assert y.dtype == np.float16 and np.allclose(y.data.astype(np.float32), 1.0, atol=1e-3)

# %% [markdown]
# ## The GPT-2 feed-forward network
#
# After attention has mixed information across positions, the MLP transforms each position
# independently: expand to `hidden_dim` (4x the width by default), apply GELU, project back:
#
# $$\mathrm{MLP}(x) = W_2\,\mathrm{GELU}(W_1 x + b_1) + b_2 .$$
#
# GPT-2 uses the tanh approximation of GELU (Hendrycks and Gimpel, 2016), which Hugging Face
# calls `gelu_new`:
#
# $$\mathrm{GELU}(h) \approx \tfrac12 h\left(1+\tanh\!\big(\sqrt{2/\pi}\,(h + 0.044715\,h^3)\big)\right).$$
#
# With $t = \tanh(\cdot)$ its derivative is
# $\tfrac12(1+t) + \tfrac12 h(1-t^2)\sqrt{2/\pi}\,(1 + 3\cdot0.044715\,h^2)$.
# Forward keeps $a = \tfrac12(1+t)$ rather than $t$ (then $\mathrm{GELU}(h) = a\,h$, and
# $1-t^2 = 4a(1-a)$), which turns the derivative into
# $a + a(1-a)\,h\,(2k + 6kc\,h^2)$ with $k = \sqrt{2/\pi}$, $c = 0.044715$: nine array
# passes in backward instead of eleven.
#
# The expanded activation is the largest tensor in the model (4x the residual stream), so
# we fuse the first Linear and the GELU into one op, `linear_gelu`: one GEMM, the
# activation computed in place, and in backward one pass that turns the incoming gradient
# into the gradient of the pre-activation before the two GEMMs. It computes exactly what
# `gelu(linear(x, W1, b1), approximate="tanh")` computes; only the bookkeeping is fused.
# `h*h*h` instead of `h**3`: NumPy's float32 `power` is ~60x slower (PERF_NOTES).

# %%
#| export
_GELU_K = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


def linear_gelu(x, weight, bias=None):
    "gelu_tanh(x @ weight.T + bias) over any leading dims, as one fused op (the first half of GPT-2's MLP)."
    ### BEGIN SOLUTION
    x2, h = affine_rows(x, weight, bias, "linear_gelu")
    a = h * h
    a *= _GELU_K * _GELU_C
    a += _GELU_K
    a *= h                                   # k (h + c h³)
    np.tanh(a, out=a)
    a += 1.0
    a *= 0.5                                 # a = (1 + tanh) / 2, so gelu(h) = a h
    out = (a * h).reshape(x.shape[:-1] + (weight.shape[0],))
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return record("linear_gelu", out, inputs, (x2, weight.data, h, a, x.shape))
    ### END SOLUTION


@derivative("linear_gelu")
def _linear_gelu_backward(g, x2, w, h, a, x_shape):
    ### BEGIN SOLUTION
    r = h * h                                # d gelu / d h = a + a (1 - a) h (2k + 6kc h²)
    r *= 6.0 * _GELU_K * _GELU_C
    r += 2.0 * _GELU_K
    r *= h
    dh = np.subtract(1.0, a)
    dh *= a
    dh *= r
    dh += a
    dh *= g.reshape(h.shape)                 # now the gradient of the pre-activation
    gx = (dh @ w).reshape(x_shape)
    return gx, dh.T @ x2, _col_sum(dh)
    ### END SOLUTION


class MLP(Module):
    "GPT-2's feed-forward network: fc1 (embed_dim -> hidden_dim), GELU (tanh), fc2 back, dropout."
    def __init__(self, embed_dim, hidden_dim=None, dropout_prob=0.0, bias=True):
        super().__init__()
        hidden_dim = 4 * embed_dim if hidden_dim is None else hidden_dim
        self.embed_dim, self.hidden_dim = embed_dim, hidden_dim
        self.fc1 = Linear(embed_dim, hidden_dim, bias=bias)
        self.fc2 = Linear(hidden_dim, embed_dim, bias=bias)
        self.dropout = Dropout(dropout_prob)

    def forward(self, x):
        ### BEGIN SOLUTION
        return self.dropout(self.fc2(linear_gelu(x, self.fc1.weight, self.fc1.bias)))
        ### END SOLUTION

# %%
def _gelu_tanh_reference(h):
    return 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))

def test_linear_gelu_formula_and_gradcheck():
    x, w, b = _t(2, 3, 4, scale=2.0), _t(5, 4, seed=1), _t(5, seed=2)
    ref = _gelu_tanh_reference(x.data @ w.data.T + b.data)
    assert np.allclose(linear_gelu(x, w, b).data, ref, rtol=1e-13, atol=1e-14)
    assert gradcheck(linear_gelu, [x, w, b]) and gradcheck(linear_gelu, [x, w])

def test_mlp_structure_and_value():
    manual_seed(0)
    mlp = MLP(8)
    assert [n for n, _ in mlp.named_parameters()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert mlp.fc1.weight.shape == (32, 8) and MLP(8, hidden_dim=10).fc2.weight.shape == (8, 10)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 8)))
    h = _gelu_tanh_reference(x.data @ mlp.fc1.weight.data.T + mlp.fc1.bias.data)
    assert np.allclose(mlp(x).data, h @ mlp.fc2.weight.data.T + mlp.fc2.bias.data, rtol=1e-5, atol=1e-6)

# %% [markdown]
# ## SwiGLU
#
# LLaMA replaces the GELU MLP by a *gated* linear unit (Shazeer, 2020): two parallel
# projections, one passed through SiLU ($\mathrm{SiLU}(a) = a\,\sigma(a)$) and used as a gate
# on the other,
#
# $$\mathrm{SwiGLU}(x) = W_2\big(\mathrm{SiLU}(W_1 x)\odot W_3 x\big),$$
#
# with no biases. Three matrices instead of two, so to keep the parameter count of a 4x MLP
# the hidden size is about $\tfrac83 d_\text{model}$; we round it *up* to a multiple of 64,
# which suits matrix-multiply kernels (CS336's convention). With $s = \mathrm{SiLU}(a)$,
# $u = W_3x$ and $\hat g = W_2^\top g$ the backward pass is
#
# $$\frac{\partial L}{\partial a} = \hat g\odot u\odot\sigma(a)\big(1 + a(1-\sigma(a))\big),\qquad
# \frac{\partial L}{\partial u} = \hat g\odot s,$$
#
# then the usual Linear rules. As one fused op the three GEMMs, the gate and the five
# backward GEMMs share their temporaries. The sigmoid is computed as
# $\tfrac12(1+\tanh(a/2))$, which never overflows.

# %%
#| export
def swiglu_hidden_dim(d_model, multiple_of=64):
    "The SwiGLU hidden size: 8/3 * d_model rounded up to a multiple of `multiple_of`."
    return multiple_of * -(-(8 * d_model) // (3 * multiple_of))


def swiglu(x, w1, w2, w3):
    "w2 @ (silu(w1 @ x) * (w3 @ x)) over any leading dims, no biases, as one fused op."
    ### BEGIN SOLUTION
    d = w1.shape[1]
    if x.shape[-1:] != (d,):
        raise ValueError(f"swiglu: input of shape {x.shape} does not match w1 of shape {w1.shape}; "
                         f"expected last dimension {d}")
    x2 = x.data.reshape(-1, d)
    a = x2 @ w1.data.T
    u = x2 @ w3.data.T
    sig = a * 0.5
    np.tanh(sig, out=sig)
    sig += 1.0
    sig *= 0.5
    h = a * sig
    h *= u
    out = (h @ w2.data.T).reshape(x.shape[:-1] + (w2.shape[0],))
    return record("swiglu", out, (x, w1, w2, w3), (x2, w1.data, w2.data, w3.data, a, u, sig, x.shape))
    ### END SOLUTION


@derivative("swiglu")
def _swiglu_backward(g, x2, w1, w2, w3, a, u, sig, x_shape):
    ### BEGIN SOLUTION
    g2 = g.reshape(-1, w2.shape[0])
    s = a * sig                                   # silu(a)
    gw2 = g2.T @ (s * u)
    gh = g2 @ w2
    gu = gh * s
    ds = 1.0 - sig                                # d silu / d a = sig * (1 + a * (1 - sig))
    ds *= a
    ds += 1.0
    ds *= sig
    gh *= u
    gh *= ds                                      # gradient of a
    gx = gh @ w1
    gx += gu @ w3
    return gx.reshape(x_shape), gh.T @ x2, gw2, gu.T @ x2
    ### END SOLUTION


class SwiGLU(Module):
    "LLaMA's gated feed-forward network w2(silu(w1 x) * w3 x), no biases."
    def __init__(self, d_model, d_ff=None):
        super().__init__()
        d_ff = swiglu_hidden_dim(d_model) if d_ff is None else d_ff
        self.d_model, self.d_ff = d_model, d_ff
        self.w1 = Linear(d_model, d_ff, bias=False)
        self.w2 = Linear(d_ff, d_model, bias=False)
        self.w3 = Linear(d_model, d_ff, bias=False)

    def forward(self, x):
        return swiglu(x, self.w1.weight, self.w2.weight, self.w3.weight)

# %%
def test_swiglu_formula_and_gradcheck():
    x, w1, w2, w3 = _t(2, 3, 4, scale=2.0), _t(6, 4, seed=1), _t(4, 6, seed=2), _t(6, 4, seed=3)
    a = x.data @ w1.data.T
    ref = (a / (1 + np.exp(-a)) * (x.data @ w3.data.T)) @ w2.data.T
    assert np.allclose(swiglu(x, w1, w2, w3).data, ref, rtol=1e-12, atol=1e-12)
    assert gradcheck(swiglu, [x, w1, w2, w3])

def test_swiglu_sizes():
    assert swiglu_hidden_dim(512) == 1408 and swiglu_hidden_dim(768) == 2048 and swiglu_hidden_dim(64) == 192
    ffn = SwiGLU(64)
    assert ffn.w1.weight.shape == (192, 64) and ffn.w2.weight.shape == (64, 192) and ffn.w3.bias is None
    assert [n for n, _ in SwiGLU(8, 16).named_parameters()] == ["w1.weight", "w2.weight", "w3.weight"]

# %% [markdown]
# ## The GPT-2 block
#
# A block is two residual sub-layers, each reading a normalised copy of the residual stream
# and adding its result back:
#
# $$x \leftarrow x + \mathrm{Attn}(\mathrm{LN}_1(x)),\qquad x \leftarrow x + \mathrm{MLP}(\mathrm{LN}_2(x)).$$
#
# This is the *pre-norm* arrangement of GPT-2 (the original Transformer normalised after
# the addition). The residual stream itself is never normalised inside the stack, so the
# gradient reaches the lowest layers through a chain of identity maps: deep pre-norm
# models train without the learning-rate warm-up tricks post-norm models need. Because the
# stream's variance grows with depth, GPT-2 adds one final LayerNorm (`ln_f`) before the
# output projection.
#
# The attention layer is module 09's `MultiHeadAttention`: a fused `qkv_proj`
# (`embed_dim -> 3 * embed_dim`), causal scaled dot-product attention, and `out_proj`.

# %%
#| export
def _check_heads(embed_dim, num_heads, who, dim_name="embed_dim"):
    if num_heads <= 0 or embed_dim <= 0:
        raise ValueError(f"{who}: {dim_name} and num_heads must be positive, got {dim_name}={embed_dim}, num_heads={num_heads}")
    if embed_dim % num_heads:
        raise ValueError(f"{who}: {dim_name} {embed_dim} is not divisible by num_heads {num_heads}")


class TransformerBlock(Module):
    "Pre-norm GPT-2 block: x + attn(ln1(x)), then x + mlp(ln2(x))."
    def __init__(self, embed_dim, num_heads, mlp_ratio=4, dropout_prob=0.0, bias=True):
        super().__init__()
        _check_heads(embed_dim, num_heads, "TransformerBlock")
        self.ln1 = LayerNorm(embed_dim, bias=bias)
        self.attn = MultiHeadAttention(embed_dim, num_heads, bias=bias, dropout=dropout_prob, causal=True)
        self.ln2 = LayerNorm(embed_dim, bias=bias)
        self.mlp = MLP(embed_dim, int(mlp_ratio * embed_dim), dropout_prob, bias=bias)

    def forward(self, x, kv_cache=None):
        ### BEGIN SOLUTION
        x = x + self.attn(self.ln1(x), kv_cache=kv_cache)
        return x + self.mlp(self.ln2(x))
        ### END SOLUTION

# %% [markdown]
# ## The model's configuration
#
# A GPT is fully described by eight settings. `GPTConfig` holds them, checks them, and
# knows the four released GPT-2 sizes and two small models for CPU training:
#
# | preset | layers | heads | width | context | vocabulary |
# |---|---|---|---|---|---|
# | `gpt2_small()` | 12 | 12 | 768 | 1024 | 50257 |
# | `gpt2_medium()` | 24 | 16 | 1024 | 1024 | 50257 |
# | `gpt2_large()` | 36 | 20 | 1280 | 1024 | 50257 |
# | `gpt2_xl()` | 48 | 25 | 1600 | 1024 | 50257 |
# | `shakespeare_char()` | 4 | 4 | 128 | 64 | 65 |
# | `baby_gpt()` | 6 | 6 | 384 | 256 | 65 |
#
# `shakespeare_char()` is nanoGPT's CPU configuration for Tiny Shakespeare (characters as
# tokens), the speed reference of this project; `baby_gpt()` is nanoGPT's "baby GPT" of the
# same task. Every preset takes keyword overrides: `GPTConfig.gpt2_small(dropout_prob=0.1)`.

# %%
#| export
@dataclass
class GPTConfig:
    "Hyperparameters of a GPT; `GPT.from_config(cfg)` builds the model, `count_parameters(cfg)` sizes it."
    vocab_size: int = 50257
    max_seq_len: int = 1024
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4
    dropout_prob: float = 0.0
    bias: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "max_seq_len", "embed_dim", "num_layers", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig: {name} must be a positive integer, got {value!r}")
        _check_heads(self.embed_dim, self.num_heads, "GPTConfig")
        if self.mlp_ratio <= 0 or int(self.mlp_ratio * self.embed_dim) != self.mlp_ratio * self.embed_dim:
            raise ValueError(f"GPTConfig: mlp_ratio * embed_dim must be a positive integer, "
                             f"got {self.mlp_ratio} * {self.embed_dim}")
        if not 0.0 <= self.dropout_prob < 1.0:
            raise ValueError(f"GPTConfig: dropout_prob must be in [0, 1), got {self.dropout_prob}")

    @property
    def head_dim(self): return self.embed_dim // self.num_heads

    @property
    def hidden_dim(self): return int(self.mlp_ratio * self.embed_dim)

    def to_dict(self): return asdict(self)

    @classmethod
    def from_dict(cls, d):
        "Rebuild a config from `to_dict()`'s output (e.g. from a checkpoint); unknown keys are an error."
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown: raise ValueError(f"GPTConfig.from_dict: unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**d)

    @classmethod
    def gpt2_small(cls, **overrides):
        return cls(**{**dict(vocab_size=50257, max_seq_len=1024, embed_dim=768, num_layers=12, num_heads=12), **overrides})

    @classmethod
    def gpt2_medium(cls, **overrides):
        return cls(**{**dict(vocab_size=50257, max_seq_len=1024, embed_dim=1024, num_layers=24, num_heads=16), **overrides})

    @classmethod
    def gpt2_large(cls, **overrides):
        return cls(**{**dict(vocab_size=50257, max_seq_len=1024, embed_dim=1280, num_layers=36, num_heads=20), **overrides})

    @classmethod
    def gpt2_xl(cls, **overrides):
        return cls(**{**dict(vocab_size=50257, max_seq_len=1024, embed_dim=1600, num_layers=48, num_heads=25), **overrides})

    @classmethod
    def shakespeare_char(cls, **overrides):
        "nanoGPT's CPU configuration for character-level Tiny Shakespeare (the speed reference)."
        return cls(**{**dict(vocab_size=65, max_seq_len=64, embed_dim=128, num_layers=4, num_heads=4), **overrides})

    @classmethod
    def baby_gpt(cls, **overrides):
        "nanoGPT's 'baby GPT' for character-level Tiny Shakespeare."
        return cls(**{**dict(vocab_size=65, max_seq_len=256, embed_dim=384, num_layers=6, num_heads=6), **overrides})


GPT2_PRESETS = ("gpt2_small", "gpt2_medium", "gpt2_large", "gpt2_xl")

# %%
def test_config_presets_and_validation():
    cfg = GPTConfig.gpt2_medium(dropout_prob=0.1)
    assert (cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.dropout_prob, cfg.head_dim) == (1024, 24, 16, 0.1, 64)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg and GPTConfig.shakespeare_char().vocab_size == 65
    with pytest.raises(ValueError, match="embed_dim 100 is not divisible by num_heads 3"):
        GPTConfig(embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="num_layers must be a positive integer, got 0"):
        GPTConfig(num_layers=0)
    with pytest.raises(ValueError, match=r"unknown keys \['n_embd'\]"):
        GPTConfig.from_dict({"n_embd": 3})

# %% [markdown]
# ## GPT
#
# The model, bottom to top:
#
# 1. `token_embedding` maps each id to a vector, `position_embedding` adds a learned vector
#    per position $0..T-1$ (GPT-2 learns its positions; it has no sinusoids and no RoPE);
#    dropout on the sum;
# 2. `blocks`: `num_layers` `TransformerBlock`s;
# 3. `ln_f`, then `lm_head` projects each position back to `vocab_size` logits.
#
# **Weight tying** (Press and Wolf, 2017). The output projection is the *same matrix* as the
# token embedding: `model.lm_head.weight is model.token_embedding.weight`. The embedding
# maps a token to a vector; the head scores a vector against every token's vector. Sharing
# saves `vocab_size * embed_dim` parameters (38.6 M of GPT-2 small's 124 M) and works as well
# or better. Here it is real sharing, not a copy: one `Parameter`, yielded once by
# `parameters()`, counted once, updated once per optimizer step, and its gradient is the sum
# of the embedding's and the head's contributions (the engine accumulates both into the same
# leaf).
#
# **Initialisation** follows GPT-2 as nanoGPT reproduces it: every Linear and Embedding weight
# $\sim\mathcal N(0, 0.02^2)$, biases zero, LayerNorms one/zero, and the two projections
# that write into the residual stream (`attn.out_proj`, `mlp.fc2`) with standard deviation
# $0.02/\sqrt{2\cdot\text{num\_layers}}$: each layer adds two terms to the stream, and the
# scaling keeps the stream's variance from growing with depth at initialisation.
#
# **Inputs.** `tokens` are integer ids of shape `(batch, seq_len)`. A 1-D sequence is
# accepted as a single sequence, and its result drops the batch axis again (logits
# `(seq_len, vocab)`), as PyTorch layers do with unbatched input. Anything else raises an
# error naming the problem: a float array, a 3-D array, an id outside `[0, vocab_size)`, a
# sequence longer than `max_seq_len` (the positions beyond it have no embedding; `generate`
# crops the context instead, `forward` never truncates silently).
#
# With `targets` (same shape as `tokens`, the next token at each position) `forward`
# returns `(logits, loss)`, the loss being module 05's fused `cross_entropy` averaged over all
# positions (`ignore_index` targets excluded).

# %%
#| export
def _as_ids(x, name):
    "Token ids as an integer ndarray (from a Tensor, array or list); a clear error for anything else."
    arr = x.data if isinstance(x, Tensor) else np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer token ids, got dtype {arr.dtype}")
    return arr


def _check_tokens(tokens, vocab_size, max_seq_len, who):
    "Validate token ids of shape (B, T) or (T,); return them as a (B, T) int64 array and whether to unbatch."
    ids = _as_ids(tokens, f"{who}: tokens")
    if ids.ndim not in (1, 2):
        raise ValueError(f"{who}: tokens must have shape (batch, seq_len), or (seq_len,) for one sequence; "
                         f"got shape {ids.shape}")
    unbatched = ids.ndim == 1
    ids = ids.reshape(1, -1) if unbatched else ids
    if ids.shape[1] == 0:
        raise ValueError(f"{who}: tokens must hold at least one position; got shape {ids.shape}")
    if max_seq_len is not None and ids.shape[1] > max_seq_len:
        raise ValueError(f"{who}: sequence length {ids.shape[1]} exceeds max_seq_len {max_seq_len}; "
                         f"crop the context to the last {max_seq_len} tokens")
    _check_range(ids, vocab_size, who)
    return ids.astype(np.int64, copy=False), unbatched


def _check_range(ids, vocab_size, who):
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise TokenIdRangeError(f"{who}: token id {bad} is out of range for vocab_size {vocab_size} "
                                f"(ids must be in [0, {vocab_size - 1}])")


def _normal_(param, std):
    "Fill a parameter in place with N(0, std^2) draws from tinytorch's generator (its array object is kept)."
    data = param.data
    if data.dtype in (np.float32, np.float64) and data.flags.c_contiguous:
        get_rng().standard_normal(out=data, dtype=data.dtype)
    else:
        data[...] = get_rng().standard_normal(data.shape)
    data *= std


def _tied_linear(weight):
    "A bias-free Linear whose weight IS `weight` (no fresh allocation, no init)."
    head = Linear.__new__(Linear)
    Module.__init__(head)
    head.in_features, head.out_features = weight.shape[1], weight.shape[0]
    head.weight, head.bias = weight, None
    return head


class GPT(Module):
    "GPT-2: token + learned position embeddings, pre-norm blocks, final LayerNorm, head tied to the embedding."
    def __init__(self, vocab_size, embed_dim, num_layers, num_heads, max_seq_len=1024, mlp_ratio=4,
                 dropout_prob=0.0, bias=True):
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab_size, max_seq_len=max_seq_len, embed_dim=embed_dim,
                                num_layers=num_layers, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                dropout_prob=dropout_prob, bias=bias)
        self.vocab_size, self.embed_dim, self.max_seq_len = vocab_size, embed_dim, max_seq_len
        self.num_layers, self.num_heads = num_layers, num_heads
        self.token_embedding = Embedding(vocab_size, embed_dim)
        self.position_embedding = PositionalEmbedding(max_seq_len, embed_dim)
        self.drop = Dropout(dropout_prob)
        self.blocks = ModuleList([TransformerBlock(embed_dim, num_heads, mlp_ratio, dropout_prob, bias)
                                  for _ in range(num_layers)])
        self.ln_f = LayerNorm(embed_dim, bias=bias)
        self.lm_head = _tied_linear(self.token_embedding.weight)
        self.reset_parameters()

    @classmethod
    def from_config(cls, cfg):
        "Build a GPT from a `GPTConfig`."
        return cls(cfg.vocab_size, cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.max_seq_len,
                   cfg.mlp_ratio, cfg.dropout_prob, cfg.bias)

    def reset_parameters(self):
        "GPT-2 initialisation: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2 * num_layers)."
        ### BEGIN SOLUTION
        std = 0.02
        _normal_(self.token_embedding.weight, std)
        _normal_(self.position_embedding.weight, std)
        for block in self.blocks:
            for layer, s in ((block.attn.qkv_proj, std), (block.attn.out_proj, std / math.sqrt(2 * self.num_layers)),
                             (block.mlp.fc1, std), (block.mlp.fc2, std / math.sqrt(2 * self.num_layers))):
                _normal_(layer.weight, s)
                if layer.bias is not None: layer.bias.data[...] = 0
        ### END SOLUTION

    def _embed(self, ids, start=0):
        "Token plus position embeddings for ids (B, T) placed at positions start .. start + T - 1."
        return self.drop(self.token_embedding(ids) + self.position_embedding(ids.shape[1], offset=start))

    def _hidden(self, ids, caches=None, start=0):
        "Final hidden states (after ln_f) of ids (B, T) at positions start..; appends to `caches` when given."
        x = self._embed(ids, start)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache=None if caches is None else caches[i])
        return self.ln_f(x)

    def forward(self, tokens, targets=None):
        ### BEGIN SOLUTION
        ids, unbatched = _check_tokens(tokens, self.vocab_size, self.max_seq_len, "GPT")
        logits = self.lm_head(self._hidden(ids))
        if targets is not None:
            tgt = _as_ids(targets, "GPT: targets")
            expected = ids.shape[1:] if unbatched else ids.shape
            if tgt.shape != expected:
                raise ValueError(f"GPT: targets of shape {tgt.shape} do not match tokens of shape {expected}")
            loss = cross_entropy(logits, tgt.reshape(ids.shape))
        if unbatched: logits = logits.reshape(logits.shape[1:])
        return logits if targets is None else (logits, loss)
        ### END SOLUTION

    def _new_caches(self, batch_size):
        head_dim = self.embed_dim // self.num_heads
        return [KVCache(batch_size, self.num_heads, self.max_seq_len, head_dim, self.token_embedding.weight.dtype)
                for _ in self.blocks]

    def _next_logits(self, ids, caches=None, start=0):
        "Logits (B, vocab) of the last position only: the head runs on one position, not T."
        return self.lm_head(self._hidden(ids, caches, start)[:, -1]).data

    def generate(self, prompt_tokens, max_new_tokens=50, temperature=1.0, top_k=None, seed=None, rng=None,
                 use_cache=True):
        "Continue `prompt_tokens` (B, T) or (T,) by `max_new_tokens` sampled tokens; greedy at temperature 0."
        return generate_tokens(self, prompt_tokens, max_new_tokens, temperature, top_k, seed, rng, use_cache)

    def extra_repr(self):
        c = self.config
        return (f"vocab_size={c.vocab_size}, embed_dim={c.embed_dim}, num_layers={c.num_layers}, "
                f"num_heads={c.num_heads}, max_seq_len={c.max_seq_len}")

# %% [markdown]
# The tests build small models in float64 and check the things that must hold exactly: the
# weight is shared, the initialisation has the right scales, the model is causal, the loss is
# the cross-entropy of the logits, and every wrong input is refused with a message naming it.
# `tests/test_10_transformers_hf.py` shows that logits and every gradient equal Hugging Face's
# `GPT2LMHeadModel`.

# %%
def _tiny_gpt(seed=0, **kw):
    manual_seed(seed)
    args = dict(vocab_size=11, embed_dim=8, num_layers=2, num_heads=2, max_seq_len=6)
    args.update(kw)
    return GPT(**args).double()

def test_gpt_structure_and_tying():
    model = _tiny_gpt()
    assert model.lm_head.weight is model.token_embedding.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names and names[:2] == ["token_embedding.weight", "position_embedding.weight"]
    assert "blocks.1.mlp.fc2.bias" in names and "blocks.0.attn.qkv_proj.weight" in names
    assert list(model.state_dict())[-1] == "lm_head.weight"                # both names in the state dict, like PyTorch
    assert model.num_parameters() == count_parameters(model.config)
    assert isinstance(model.config, GPTConfig) and GPT.from_config(model.config).config == model.config
    no_bias = _tiny_gpt(bias=False)
    assert no_bias.blocks[0].mlp.fc1.bias is None and no_bias.ln_f.bias is None
    assert no_bias.num_parameters() == count_parameters(no_bias.config) == model.num_parameters() - 9 * 8 * 2 - 5 * 8

def test_gpt_initialisation_scales():
    manual_seed(0)
    model = GPT(vocab_size=500, embed_dim=64, num_layers=8, num_heads=4, max_seq_len=512)
    std = lambda p: float(p.data.std())
    assert abs(std(model.token_embedding.weight) - 0.02) < 1e-3 and abs(std(model.position_embedding.weight) - 0.02) < 1e-3
    assert abs(std(model.blocks[0].mlp.fc1.weight) - 0.02) < 1e-3
    assert abs(std(model.blocks[3].attn.out_proj.weight) - 0.02 / 4) < 3e-4        # 1/sqrt(2 * 8) = 1/4
    assert abs(std(model.blocks[3].mlp.fc2.weight) - 0.02 / 4) < 3e-4
    assert not model.blocks[0].attn.qkv_proj.bias.data.any() and np.all(model.ln_f.weight.data == 1)

def test_gpt_forward_loss_and_causality():
    model = _tiny_gpt()
    ids = np.array([[1, 2, 3, 4, 5], [0, 10, 9, 8, 7]])
    tgt = np.array([[2, 3, 4, 5, 6], [10, 9, 8, 7, 6]])
    logits, loss = model(ids, targets=tgt)
    assert logits.shape == (2, 5, 11) and logits.dtype == np.float64
    z = logits.data - logits.data.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    assert abs(loss.item() + np.take_along_axis(logp, tgt[..., None], -1).mean()) < 1e-12
    changed = ids.copy(); changed[:, 3:] = 1                                 # change the future
    assert np.allclose(model(changed).data[:, :3], logits.data[:, :3], rtol=0, atol=1e-13)
    assert not np.allclose(model(changed).data[:, 3:], logits.data[:, 3:])
    single = model(ids[1])                                                   # 1-D: one sequence, unbatched result
    assert single.shape == (5, 11) and np.allclose(single.data, logits.data[1], atol=1e-13)

def test_gpt_gradients_flow_to_every_parameter():
    model = _tiny_gpt()
    _, loss = model(np.array([[1, 2, 3], [4, 5, 6]]), targets=np.array([[2, 3, 4], [5, 6, 7]]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and np.abs(p.grad.data).max() > 0, name

def test_gpt_errors():
    model = _tiny_gpt()
    with pytest.raises(ValueError, match="embed_dim 10 is not divisible by num_heads 4"):
        GPT(vocab_size=5, embed_dim=10, num_layers=1, num_heads=4)
    with pytest.raises(ValueError, match="token id 11 is out of range for vocab_size 11"):
        model(np.array([[1, 11]]))
    with pytest.raises(ValueError, match="token id -1 is out of range for vocab_size 11"):
        model(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="sequence length 7 exceeds max_seq_len 6"):
        model(np.zeros((1, 7), dtype=np.int64))
    with pytest.raises(ValueError, match=r"tokens must have shape \(batch, seq_len\).*got shape \(1, 2, 3\)"):
        model(np.zeros((1, 2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="tokens must be integer token ids, got dtype float32"):
        model(Tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"targets of shape \(1, 3\) do not match tokens of shape \(1, 2\)"):
        model(np.array([[1, 2]]), targets=np.array([[1, 2, 3]]))

# %% [markdown]
# ## Generating text
#
# `generate` repeats: take the logits of the last position, turn them into a next token, and
# append it. The next token is
#
# - at `temperature=0`: the argmax (greedy decoding, deterministic);
# - otherwise: a sample from $\mathrm{softmax}(z/\tau)$, where `top_k` first keeps only the
#   $k$ largest logits. The draws come from `rng` (a NumPy `Generator`), or a fresh
#   generator seeded with `seed`, or else tinytorch's global generator (`manual_seed`), so a
#   run is reproducible. Module 12 adds nucleus sampling and more; this is the core loop.
#
# It runs under `no_grad` (no graph is recorded, nothing is kept alive) and in `eval()` mode
# (no dropout; the previous mode is restored afterwards). It works on a batch: every row of
# `prompt_tokens (B, T)` is continued independently (all rows have the same length, so they
# share positions). A 1-D prompt gives a 1-D result. The result holds the prompt followed by
# the new tokens, as a tensor of int64 ids.
#
# **The KV cache.** Without a cache, step $t$ runs the model over all $t$ tokens again. With
# module 09's `KVCache` (one per layer), the prompt is encoded once ("prefill"), and each
# further step feeds only the newest token at position `cache.length`, attending to the
# cached keys and values: $O(t)$ work per step instead of $O(t^2)$.
#
# **Longer than the context.** The model knows positions $0 \ldots$ `max_seq_len`$-1$ only. A
# prompt longer than that is cropped to its last `max_seq_len` tokens. When the text being
# generated reaches `max_seq_len`, the cache is full, and its entries cannot be reused for
# a sliding window: every cached key was computed with its absolute position embedding and
# from a context that included the tokens now dropped. So from then on each step re-encodes
# the last `max_seq_len` tokens from scratch, without the cache: exactly what nanoGPT's
# `generate` does at every step, and the reason the cached and uncached rollouts agree
# token for token. (Cheaper approximations exist, such as re-encoding only every
# `max_seq_len // 2` steps, but they change the output.) `use_cache=False` disables the cache
# altogether, which is the reference the tests compare against.

# %%
#| export
def _check_generate_args(max_new_tokens, temperature, top_k):
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if temperature is None or not 0 <= temperature < float("inf"):
        raise ValueError(f"generate: temperature must be a finite number >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"generate: top_k must be a positive integer or None, got {top_k!r}")


def sample_from_logits(logits, temperature=1.0, top_k=None, rng=None):
    "One token id per row of `logits` (B, V): argmax at temperature 0, else a draw from softmax(logits / T) over the top k."
    ### BEGIN SOLUTION
    z = np.asarray(logits, dtype=np.float64)
    if temperature == 0: return z.argmax(axis=-1)
    z = z / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    z -= z.max(axis=-1, keepdims=True)
    cdf = np.cumsum(np.exp(z), axis=-1)
    u = (get_rng() if rng is None else rng).random(z.shape[0]) * cdf[:, -1]
    ids = (cdf <= u[:, None]).sum(axis=-1)                   # first index whose cumulative mass exceeds u
    last = z.shape[-1] - 1 - np.isfinite(z[:, ::-1]).argmax(axis=-1)
    return np.minimum(ids, last)                             # never past the last token that can be drawn
    ### END SOLUTION


def generate_tokens(model, prompt_tokens, max_new_tokens=50, temperature=1.0, top_k=None, seed=None, rng=None,
                    use_cache=True):
    "Autoregressive generation for GPT and TransformerLM (see GPT.generate): no graph, KV cache, context cropping."
    ### BEGIN SOLUTION
    who = f"{type(model).__name__}.generate"
    _check_generate_args(max_new_tokens, temperature, top_k)
    ids, unbatched = _check_tokens(prompt_tokens, model.vocab_size, None, who)
    if seed is not None and rng is not None:
        raise ValueError(f"{who}: give either seed or rng, not both")
    rng = np.random.default_rng(seed) if seed is not None else rng
    context = model.max_seq_len
    b, t0 = ids.shape
    out = np.empty((b, t0 + max_new_tokens), dtype=np.int64)
    out[:, :t0] = ids
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            caches = model._new_caches(b) if use_cache and max_new_tokens else None
            cur = t0
            logits = model._next_logits(out[:, max(0, cur - context):cur], caches) if max_new_tokens else None
            for step in range(max_new_tokens):
                out[:, cur] = sample_from_logits(logits, temperature, top_k, rng)
                cur += 1
                if step == max_new_tokens - 1: break
                if caches is not None and caches[0].length < context:       # feed one token, reuse the cache
                    logits = model._next_logits(out[:, cur - 1:cur], caches, caches[0].length)
                else:                                                        # window full: re-encode it
                    logits = model._next_logits(out[:, max(0, cur - context):cur])
    finally:
        model.train(was_training)
    return _wrap(out[0] if unbatched else out)
    ### END SOLUTION

# %%
def _argmax_rollout(model, prompt, n):
    "Greedy decoding the slow way: a full forward over the (cropped) context for every token."
    seq = np.array(prompt)
    for _ in range(n):
        logits = model(seq[:, -model.max_seq_len:]).data
        seq = np.concatenate([seq, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return seq

def test_generate_greedy_equals_full_forward_rollout():
    model = _tiny_gpt(seed=3)
    prompt = np.array([[1, 2, 3], [4, 4, 0]])
    out = model.generate(prompt, max_new_tokens=9, temperature=0)           # 3 + 9 > max_seq_len 6: crops
    assert out._node is None and out.dtype == np.int64 and out.shape == (2, 12)
    assert np.array_equal(out.data, _argmax_rollout(model, prompt, 9))
    assert np.array_equal(model.generate(prompt, 9, temperature=0, use_cache=False).data, out.data)
    long_prompt = np.arange(10)[None] % 11                                  # longer than the context
    assert np.array_equal(model.generate(long_prompt, 3, temperature=0).data, _argmax_rollout(model, long_prompt, 3))
    assert model.generate([1, 2], 2, temperature=0).shape == (4,)          # 1-D prompt, 1-D result

def test_generate_sampling_is_reproducible_and_respects_top_k():
    model = _tiny_gpt(seed=4)
    a = model.generate([[1, 2]], 5, temperature=1.0, seed=7)
    assert np.array_equal(a.data, model.generate([[1, 2]], 5, temperature=1.0, seed=7).data)
    assert np.array_equal(model.generate([[1, 2]], 5, top_k=1, seed=1).data, model.generate([[1, 2]], 5, temperature=0).data)
    counts = np.bincount(sample_from_logits(np.tile([[0.0, 1.0, 2.0, 3.0]], (4000, 1)), 1.0, 2, np.random.default_rng(0)),
                         minlength=4)
    assert counts[:2].sum() == 0 and abs(counts[3] / 4000 - np.e / (1 + np.e)) < 0.03

def test_generate_keeps_mode_and_checks_arguments():
    model = _tiny_gpt()
    model.train()
    model.generate([[1]], 2)
    assert model.training
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        model.generate([[1]], 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k must be a positive integer or None, got 0"):
        model.generate([[1]], 2, top_k=0)
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative integer, got -1"):
        model.generate([[1]], -1)
    with pytest.raises(ValueError, match="GPT.generate: token id 11 is out of range"):
        model.generate([[11]], 1)
    with pytest.raises(ValueError, match="give either seed or rng, not both"):
        model.generate([[1]], 1, seed=0, rng=np.random.default_rng(0))

# %% [markdown]
# ## Counting parameters without building the model
#
# Every parameter's shape follows from the configuration, so the count needs no memory.
# With width $C$, hidden size $H$ (= 4C), vocabulary $V$, context $P$ and $L$ layers:
#
# | component | parameters |
# |---|---|
# | token embedding (shared with the head) | $VC$ |
# | position embedding | $PC$ |
# | attention per layer: qkv weight and bias, out weight and bias | $3C^2 + 3C + C^2 + C = 4C^2 + 4C$ |
# | MLP per layer: fc1 and fc2 with biases | $2CH + H + C$ |
# | LayerNorms: two per layer and `ln_f`, weight and bias each | $(2L + 1)\cdot 2C$ |
#
# For GPT-2 small ($C = 768$, $L = 12$, $V = 50257$, $P = 1024$): the embeddings hold
# 38,597,376 + 786,432; one block holds 4,608 (LayerNorms) + 1,771,776 (qkv) + 590,592 (out)
# + 2,362,368 (fc1) + 2,360,064 (fc2) = 7,087,872, twelve blocks 85,054,464; `ln_f` 1,536.
# Total **124,439,808**, exactly the parameter count of Hugging Face's `GPT2LMHeadModel`
# (whose `lm_head` is tied too).
#
# The figure 124,356,864 that circulates in some course material is 82,944 smaller, and
# $82{,}944 = 12 \times 6{,}912 = 12 \times 9 \times 768$: exactly the biases of the four
# Linear layers of each block ($3C$ for qkv, $C$ for the attention output, $4C$ for fc1, $C$
# for fc2: $9C$ per block). It counts every weight matrix and every LayerNorm parameter but
# no Linear bias. (nanoGPT prints "123.65M": it leaves out the position embedding,
# 124,439,808 − 786,432 = 123,653,376.) The four released sizes come to 124,439,808,
# 354,823,168, 774,030,080 and 1,557,611,200; the tests check all four against Hugging Face.

# %%
#| export
def parameter_breakdown(cfg):
    "Parameters per component of the GPT that `cfg` describes (an OrderedDict ending with 'total'); allocates nothing."
    ### BEGIN SOLUTION
    C, V, P, L, H = cfg.embed_dim, cfg.vocab_size, cfg.max_seq_len, cfg.num_layers, int(cfg.mlp_ratio * cfg.embed_dim)
    b = 1 if cfg.bias else 0
    rows = OrderedDict(token_embedding=V * C, position_embedding=P * C,
                       attention=L * (4 * C * C + 4 * C * b),
                       mlp=L * (2 * C * H + (H + C) * b),
                       layer_norm=(2 * L + 1) * C * (1 + b),
                       lm_head=0)                    # tied to token_embedding
    rows["total"] = sum(rows.values())
    return rows
    ### END SOLUTION


def count_parameters(cfg):
    "Total parameters of the GPT that `cfg` describes (tied head counted once), computed without allocating."
    return parameter_breakdown(cfg)["total"]


def _print_table(rows):
    "Print a list of dicts as right-aligned columns (ints with thousands separators, floats with one decimal)."
    fmt = lambda v: f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
    cols = list(rows[0])
    width = {c: max(len(c), *(len(fmt(r[c])) for r in rows)) for c in cols}
    print("  ".join(f"{c:>{width[c]}}" for c in cols))
    for r in rows:
        print("  ".join(f"{fmt(r[c]):>{width[c]}}" for c in cols))


def analyze_parameter_scaling(configs=None, print_table=True):
    "Parameters per component for each config (default: the four GPT-2 sizes); print a table, return the rows."
    configs = configs or OrderedDict((name, getattr(GPTConfig, name)()) for name in GPT2_PRESETS)
    rows = []
    for name, cfg in configs.items():
        rows.append(OrderedDict(name=name, layers=cfg.num_layers, width=cfg.embed_dim, heads=cfg.num_heads,
                                **parameter_breakdown(cfg)))
        rows[-1]["float32_MB"] = rows[-1]["total"] * 4 / 2**20
    if print_table: _print_table(rows)
    return rows

# %% [markdown]
# Attention stores a score for every pair of positions: one layer's scores (and, for the
# backward pass, its softmax probabilities) take `batch * heads * seq_len^2` numbers, so
# memory grows with the *square* of the context. At GPT-2 small's 12 heads and 1024 tokens
# that is 48 MiB per sequence per layer in float32; at 8192 tokens it would be 3 GiB.
# This quadratic term, not the parameters, is what limits context length, and it is what
# FlashAttention-style kernels avoid materialising.

# %%
#| export
def attention_memory_bytes(batch_size, seq_len, num_heads, dtype=np.float32):
    "Bytes of one layer's attention score matrix, shape (batch_size, num_heads, seq_len, seq_len)."
    return int(batch_size) * int(num_heads) * int(seq_len) ** 2 * np.dtype(dtype).itemsize


def analyze_attention_memory(seq_lens=(128, 256, 512, 1024, 2048, 4096, 8192), batch_size=1, num_heads=12,
                             num_layers=12, dtype=np.float32, print_table=True):
    "Attention-score memory per layer and for all layers (kept for backward) at each context length."
    rows = [OrderedDict(seq_len=t, per_layer_MiB=attention_memory_bytes(batch_size, t, num_heads, dtype) / 2**20,
                        all_layers_MiB=num_layers * attention_memory_bytes(batch_size, t, num_heads, dtype) / 2**20)
            for t in seq_lens]
    if print_table:
        print(f"batch {batch_size}, {num_heads} heads, {num_layers} layers, {np.dtype(dtype).name}")
        _print_table(rows)
    return rows

# %%
def test_count_parameters_gpt2_sizes():
    expected = dict(gpt2_small=124_439_808, gpt2_medium=354_823_168, gpt2_large=774_030_080, gpt2_xl=1_557_611_200)
    for name, n in expected.items():
        assert count_parameters(getattr(GPTConfig, name)()) == n
    small = parameter_breakdown(GPTConfig.gpt2_small())
    assert small["total"] - 124_356_864 == 12 * 9 * 768                    # the seed figure omits Linear biases
    assert small["total"] - small["position_embedding"] == 123_653_376      # nanoGPT's "123.65M"
    assert count_parameters(GPTConfig.gpt2_small(bias=False)) == 124_439_808 - 12 * 9 * 768 - 25 * 768

def test_scaling_and_memory_tables():
    rows = analyze_parameter_scaling(print_table=False)
    assert [r["name"] for r in rows] == list(GPT2_PRESETS) and rows[-1]["total"] == 1_557_611_200
    assert attention_memory_bytes(1, 1024, 12) == 48 * 2**20
    assert attention_memory_bytes(2, 10, 3, np.float64) == 2 * 3 * 100 * 8
    assert analyze_attention_memory((1024,), print_table=False)[0]["all_layers_MiB"] == 12 * 48.0

# %% [markdown]
# ## Hugging Face interop
#
# Hugging Face's GPT-2 names its weights after OpenAI's original TensorFlow code, and its
# projections are `Conv1D` layers: a Linear whose weight is stored as `(in_features,
# out_features)`, the *transpose* of PyTorch's (and our) `Linear.weight`. The map:
#
# | Hugging Face (`GPT2LMHeadModel`) | tinytorch `GPT` | transposed |
# |---|---|---|
# | `transformer.wte.weight` | `token_embedding.weight` | |
# | `transformer.wpe.weight` | `position_embedding.weight` | |
# | `transformer.h.{i}.ln_1.{weight,bias}` | `blocks.{i}.ln1.{weight,bias}` | |
# | `transformer.h.{i}.attn.c_attn.{weight,bias}` | `blocks.{i}.attn.qkv_proj.{weight,bias}` | weight |
# | `transformer.h.{i}.attn.c_proj.{weight,bias}` | `blocks.{i}.attn.out_proj.{weight,bias}` | weight |
# | `transformer.h.{i}.ln_2.{weight,bias}` | `blocks.{i}.ln2.{weight,bias}` | |
# | `transformer.h.{i}.mlp.c_fc.{weight,bias}` | `blocks.{i}.mlp.fc1.{weight,bias}` | weight |
# | `transformer.h.{i}.mlp.c_proj.{weight,bias}` | `blocks.{i}.mlp.fc2.{weight,bias}` | weight |
# | `transformer.ln_f.{weight,bias}` | `ln_f.{weight,bias}` | |
# | `lm_head.weight` | `lm_head.weight` (= `token_embedding.weight`) | |
#
# `c_attn` produces queries, keys and values in that order, each split into heads of
# `head_dim` consecutive columns, which is the layout of module 09's `qkv_proj`. Older
# checkpoints also carry the buffers `attn.bias` (the causal mask) and `attn.masked_bias`;
# they are not weights and are ignored. A state dict of the bare `GPT2Model` (keys without
# `transformer.` and no `lm_head`) loads too. Values may be NumPy arrays, tinytorch tensors
# or anything with a `.numpy()` such as CPU torch tensors, so `model.state_dict()` of a
# Hugging Face model can be passed as it is; torch itself is never imported here.

# %%
#| export
_HF_BLOCK = (("ln_1.weight", "ln1.weight", False), ("ln_1.bias", "ln1.bias", False),
             ("attn.c_attn.weight", "attn.qkv_proj.weight", True), ("attn.c_attn.bias", "attn.qkv_proj.bias", False),
             ("attn.c_proj.weight", "attn.out_proj.weight", True), ("attn.c_proj.bias", "attn.out_proj.bias", False),
             ("ln_2.weight", "ln2.weight", False), ("ln_2.bias", "ln2.bias", False),
             ("mlp.c_fc.weight", "mlp.fc1.weight", True), ("mlp.c_fc.bias", "mlp.fc1.bias", False),
             ("mlp.c_proj.weight", "mlp.fc2.weight", True), ("mlp.c_proj.bias", "mlp.fc2.bias", False))
_HF_IGNORED = (".attn.bias", ".attn.masked_bias")


def hf_gpt2_key_map(num_layers):
    "[(Hugging Face key without 'transformer.', tinytorch GPT key, transposed?)] in Hugging Face's order."
    rows = [("wte.weight", "token_embedding.weight", False), ("wpe.weight", "position_embedding.weight", False)]
    for i in range(num_layers):
        rows += [(f"h.{i}.{hf}", f"blocks.{i}.{ours}", tr) for hf, ours, tr in _HF_BLOCK]
    return rows + [("ln_f.weight", "ln_f.weight", False), ("ln_f.bias", "ln_f.bias", False)]


def _to_numpy(value):
    "An ndarray from a NumPy array, a tinytorch Tensor or a CPU torch tensor (without importing torch)."
    if isinstance(value, Tensor): return value.data
    if hasattr(value, "detach"):                                   # torch.Tensor, duck-typed
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16": value = value.float()
        return value.numpy()
    return np.asarray(value)


def _hf_layers(keys):
    return sorted({int(k.split(".")[1]) for k in keys if k.startswith("h.") and k.split(".")[1].isdigit()})


def _require_hf_compatible(model):
    if not isinstance(model, GPT):
        raise TypeError(f"expected a tinytorch GPT, got {type(model).__name__}")
    if not model.config.bias:
        raise ValueError("Hugging Face GPT-2 has biases in every Linear and LayerNorm; this GPT was built with bias=False")


def load_hf_gpt2_state_dict(model, hf_state_dict):
    "Load a Hugging Face GPT-2 state dict (GPT2LMHeadModel or GPT2Model layout) into `model`; return the model."
    ### BEGIN SOLUTION
    _require_hf_compatible(model)
    items = dict(hf_state_dict)
    prefixed = any(k.startswith("transformer.") for k in items)
    pre = "transformer." if prefixed else ""
    head = items.pop("lm_head.weight", None)
    body = {}
    unexpected = []
    for k, v in items.items():
        if k.endswith(_HF_IGNORED): continue
        if prefixed and not k.startswith(pre): unexpected.append(k)
        else: body[k[len(pre):]] = v
    key_map = hf_gpt2_key_map(model.num_layers)
    missing = [pre + hf for hf, _, _ in key_map if hf not in body]
    known = {hf for hf, _, _ in key_map}
    unexpected += [pre + k for k in body if k not in known]
    if missing or unexpected:
        parts = []
        if missing: parts.append("missing keys: " + ", ".join(missing))
        if unexpected: parts.append("unexpected keys: " + ", ".join(unexpected))
        layers = _hf_layers(body)
        if layers and len(layers) != model.num_layers:
            parts.append(f"the state dict has {len(layers)} layers, the model {model.num_layers}")
        raise StateDictError("load_hf_gpt2_state_dict: " + " | ".join(parts))
    targets = dict(model._state_entries())
    ours, mismatched = OrderedDict(), []
    for hf, name, transpose in key_map:
        arr = _to_numpy(body[hf])
        want = targets[name].shape[::-1] if transpose else targets[name].shape
        if arr.shape != want:
            mismatched.append(f"{pre + hf} expected {want}, got {arr.shape}")
            continue
        ours[name] = arr.T if transpose else arr
    if mismatched:
        raise StateDictError("load_hf_gpt2_state_dict: shape mismatches: " + "; ".join(mismatched))
    if head is not None and not np.array_equal(_to_numpy(head), ours["token_embedding.weight"]):
        raise ValueError("load_hf_gpt2_state_dict: lm_head.weight differs from transformer.wte.weight, but GPT ties "
                         "the output projection to the token embedding (one shared matrix)")
    ours["lm_head.weight"] = ours["token_embedding.weight"]
    model.load_state_dict(ours)
    return model
    ### END SOLUTION


def to_hf_gpt2_state_dict(model):
    "The model's weights as a Hugging Face GPT2LMHeadModel state dict (NumPy arrays, Conv1D weights transposed)."
    ### BEGIN SOLUTION
    _require_hf_compatible(model)
    ours = dict(model._state_entries())
    out = OrderedDict()
    for hf, name, transpose in hf_gpt2_key_map(model.num_layers):
        arr = ours[name].data
        out["transformer." + hf] = np.ascontiguousarray(arr.T) if transpose else arr.copy()
    out["lm_head.weight"] = out["transformer.wte.weight"].copy()
    return out
    ### END SOLUTION


def _gpt_from_hf_state_dict(cls, hf_state_dict, num_heads=None, dtype=None, **overrides):
    "Build a GPT sized from a Hugging Face GPT-2 state dict (num_heads defaults to embed_dim // 64) and load it."
    sd = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in dict(hf_state_dict).items()}
    for key in ("wte.weight", "wpe.weight", "h.0.mlp.c_fc.weight"):
        if key not in sd: raise StateDictError(f"GPT.from_hf_state_dict: missing key {key} (or transformer.{key})")
    vocab_size, embed_dim = np.shape(_to_numpy(sd["wte.weight"]))
    max_seq_len = np.shape(_to_numpy(sd["wpe.weight"]))[0]
    hidden = np.shape(_to_numpy(sd["h.0.mlp.c_fc.weight"]))[1]
    if num_heads is None:
        if embed_dim % 64:
            raise ValueError(f"GPT.from_hf_state_dict: cannot infer num_heads for embed_dim {embed_dim}: pass num_heads=")
        num_heads = embed_dim // 64                       # all released GPT-2 sizes use 64-dimensional heads
    cfg = dict(vocab_size=int(vocab_size), max_seq_len=int(max_seq_len), embed_dim=int(embed_dim),
               num_layers=len(_hf_layers(sd)), num_heads=int(num_heads), mlp_ratio=hidden / embed_dim)
    cfg.update(overrides)
    model = cls.from_config(GPTConfig(**cfg))
    if dtype is not None: model.to(dtype)
    return load_hf_gpt2_state_dict(model, hf_state_dict)


GPT.from_hf_state_dict = classmethod(_gpt_from_hf_state_dict)

# %%
def test_hf_layout_round_trip():
    model = _tiny_gpt()
    hf = to_hf_gpt2_state_dict(model)
    assert hf["transformer.h.1.attn.c_attn.weight"].shape == (8, 24)        # Conv1D: (in, out)
    assert np.array_equal(hf["transformer.h.1.mlp.c_fc.weight"], model.blocks[1].mlp.fc1.weight.data.T)
    other = GPT.from_hf_state_dict(hf, num_heads=2, dtype=np.float64)
    assert all(np.array_equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values()))
    assert other.lm_head.weight is other.token_embedding.weight
    bad = dict(hf); del bad["transformer.ln_f.bias"]; bad["transformer.h.2.ln_1.weight"] = np.ones(8)
    with pytest.raises(StateDictError, match=r"missing keys: transformer.ln_f.bias \| unexpected keys: "
                                             r"transformer.h.2.ln_1.weight \| the state dict has 3 layers, the model 2"):
        load_hf_gpt2_state_dict(model, bad)
    untied = dict(hf); untied["lm_head.weight"] = hf["lm_head.weight"] + 1
    with pytest.raises(ValueError, match="lm_head.weight differs from transformer.wte.weight"):
        load_hf_gpt2_state_dict(model, untied)

# %% [markdown]
# ## The LLaMA-style TransformerLM
#
# Five years of practice changed GPT-2's recipe in a few places, and LLaMA (Touvron et al.,
# 2023) collected the changes. Stanford's CS336 course builds exactly this model, and we use
# its names and signatures so that its tests and checkpoints fit:
#
# | | GPT-2 | TransformerLM |
# |---|---|---|
# | normalisation | LayerNorm, pre-norm | RMSNorm, pre-norm |
# | positions | learned, added to the input | RoPE, rotating q and k in every layer |
# | feed-forward | GELU MLP, 4x | SwiGLU, about 8/3x |
# | biases | everywhere | none |
# | output head | tied to the embedding | its own matrix |
#
# The attention layer, `CausalSelfAttention(d_model, num_heads, rope)`, keeps four separate
# projections `q_proj`, `k_proj`, `v_proj`, `output_proj` (CS336's names). Internally the three
# input projections run as one GEMM on their concatenated weights and feed module 09's fused
# `fused_qkv_attention`, which applies RoPE and the causal mask and can use a KV cache; the
# concatenation is itself a graph op, so each weight still receives its own gradient.
#
# RoPE uses interleaved pairs `(x[2i], x[2i+1])`, the convention of the RoFormer paper, Meta's
# LLaMA code and CS336 (module 08 explains the relation to Hugging Face's half-split layout).
# `token_positions` (integers of shape `(..., T)`) give each token's position; by default they
# are `0 … T-1`. One `RotaryEmbedding` (its tables are not parameters) is shared by all layers.
#
# Initialisation follows CS336: Linear weights from a normal distribution with variance
# $2/(d_\text{in}+d_\text{out})$ truncated at three standard deviations, embeddings from a
# standard normal truncated at ±3, RMSNorm gains one.
#
# Every part works over arbitrary leading batch dimensions: tokens of shape `(2, 3, T)` give
# logits of shape `(2, 3, T, vocab_size)`.

# %%
#| export
def _trunc_normal_(param, std):
    "Fill with N(0, std^2) truncated to [-3 std, 3 std] (out-of-range draws are redrawn)."
    rng, dtype = get_rng(), np.float64 if param.dtype == np.float64 else np.float32
    data = rng.standard_normal(param.shape, dtype=dtype)
    bad = np.abs(data) > 3.0
    while bad.any():
        data[bad] = rng.standard_normal(int(bad.sum()), dtype=dtype)
        bad = np.abs(data) > 3.0
    data *= std
    param.data[...] = data


def _positions_2d(token_positions, lead, t, start, who):
    "Token positions as (T,) or (N, T) int arrays matching x reshaped to (N, T, C)."
    if token_positions is None: return np.arange(start, start + t)
    pos = _as_ids(token_positions, f"{who}: token_positions")
    if pos.shape[-1:] != (t,):
        raise ValueError(f"{who}: token_positions of shape {pos.shape} must end with seq_len {t}")
    if pos.ndim == 1: return pos
    try:
        pos = np.broadcast_to(pos, lead + (t,))
    except ValueError:
        raise ValueError(f"{who}: token_positions of shape {pos.shape} do not broadcast to the batch shape "
                         f"{lead + (t,)}") from None
    return pos.reshape(-1, t)


class CausalSelfAttention(Module):
    "Causal multi-head self-attention with separate q/k/v/output projections (no bias) and optional RoPE."
    def __init__(self, d_model, num_heads, rope=None):
        super().__init__()
        _check_heads(d_model, num_heads, "CausalSelfAttention", "d_model")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.q_proj = Linear(d_model, d_model, bias=False)
        self.k_proj = Linear(d_model, d_model, bias=False)
        self.v_proj = Linear(d_model, d_model, bias=False)
        self.output_proj = Linear(d_model, d_model, bias=False)
        if rope is not None and (not isinstance(rope, RotaryEmbedding) or rope.dim != self.head_dim):
            raise ValueError(f"CausalSelfAttention: rope must be a RotaryEmbedding over head_dim {self.head_dim} "
                             f"(d_model {d_model} / num_heads {num_heads}), got {rope!r}")
        self.rope = rope

    def forward(self, x, token_positions=None, kv_cache=None):
        ### BEGIN SOLUTION
        if x.ndim < 2 or x.shape[-1] != self.d_model:
            raise ValueError(f"CausalSelfAttention: expected input of shape (..., seq_len, {self.d_model}), got {x.shape}")
        if kv_cache is not None and is_grad_enabled():
            with no_grad():
                return self.forward(x, token_positions, kv_cache)
        lead, t = x.shape[:-2], x.shape[-2]
        x3 = x if x.ndim == 3 else x.reshape(-1, t, self.d_model)
        cos = sin = None
        if self.rope is not None:
            start = 0 if kv_cache is None else kv_cache.length
            pos = _positions_2d(token_positions, lead, t, start, "CausalSelfAttention")
            cos, sin = self.rope.tables(t, pos, x.dtype)
            if cos.ndim == 3: cos, sin = cos[:, None], sin[:, None]        # (N, T, d/2): shared by the heads
        w_qkv = cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight], axis=0)
        y = fused_qkv_attention(linear(x3, w_qkv), self.num_heads, True, None, cos, sin, 0.0, kv_cache)
        out = self.output_proj(y)
        return out if x.ndim == 3 else out.reshape(x.shape)
        ### END SOLUTION

    def extra_repr(self):
        return f"d_model={self.d_model}, num_heads={self.num_heads}"


class TransformerBlockLM(Module):
    "Pre-norm LLaMA block (CS336 signature): x + attn(ln1(x)), then x + ffn(ln2(x)) with RMSNorm, RoPE and SwiGLU."
    def __init__(self, d_model, num_heads, d_ff, max_seq_len, theta, rope=None):
        super().__init__()
        _check_heads(d_model, num_heads, "TransformerBlockLM", "d_model")
        rope = RotaryEmbedding(d_model // num_heads, theta, max_seq_len) if rope is None else rope
        self.ln1 = RMSNorm(d_model)
        self.attn = CausalSelfAttention(d_model, num_heads, rope)
        self.ln2 = RMSNorm(d_model)
        self.ffn = SwiGLU(d_model, d_ff)

    def forward(self, x, token_positions=None, kv_cache=None):
        ### BEGIN SOLUTION
        x = x + self.attn(self.ln1(x), token_positions, kv_cache)
        return x + self.ffn(self.ln2(x))
        ### END SOLUTION


class TransformerLM(Module):
    "LLaMA-style decoder (CS336): embeddings, RMSNorm/RoPE/SwiGLU blocks, final RMSNorm, untied lm_head."
    def __init__(self, vocab_size, context_length, d_model, num_layers, num_heads, d_ff=None, rope_theta=10000.0):
        super().__init__()
        _check_heads(d_model, num_heads, "TransformerLM", "d_model")
        d_ff = swiglu_hidden_dim(d_model) if d_ff is None else d_ff
        self.vocab_size, self.context_length, self.d_model = vocab_size, context_length, d_model
        self.num_layers, self.num_heads, self.d_ff, self.rope_theta = num_layers, num_heads, d_ff, rope_theta
        self.token_embeddings = Embedding(vocab_size, d_model)
        rope = RotaryEmbedding(d_model // num_heads, rope_theta, context_length)
        self.layers = ModuleList([TransformerBlockLM(d_model, num_heads, d_ff, context_length, rope_theta, rope)
                                  for _ in range(num_layers)])
        self.ln_final = RMSNorm(d_model)
        self.lm_head = Linear(d_model, vocab_size, bias=False)
        self.reset_parameters()

    @property
    def max_seq_len(self): return self.context_length

    def reset_parameters(self):
        "CS336 initialisation: truncated normals (Linear variance 2/(in+out), embeddings variance 1), RMSNorm gains 1."
        for m in self.modules():
            if isinstance(m, Linear): _trunc_normal_(m.weight, math.sqrt(2.0 / (m.in_features + m.out_features)))
            elif isinstance(m, Embedding): _trunc_normal_(m.weight, 1.0)

    def _hidden(self, ids, token_positions=None, caches=None):
        x = self.token_embeddings(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, token_positions, None if caches is None else caches[i])
        return self.ln_final(x)

    def forward(self, tokens, token_positions=None):
        "Logits (..., T, vocab_size) for integer tokens (..., T); `token_positions` default to 0 .. T-1."
        ### BEGIN SOLUTION
        ids = _as_ids(tokens, "TransformerLM: tokens")
        if ids.ndim == 0 or ids.shape[-1] == 0:
            raise ValueError(f"TransformerLM: tokens must have shape (..., seq_len) with seq_len >= 1, got {ids.shape}")
        t = ids.shape[-1]
        if t > self.context_length:
            raise ValueError(f"TransformerLM: sequence length {t} exceeds context_length {self.context_length}; "
                             f"crop the context to the last {self.context_length} tokens")
        _check_range(ids, self.vocab_size, "TransformerLM")
        lead = ids.shape[:-1]
        ids2 = ids.reshape(-1, t)
        pos = None if token_positions is None else _positions_2d(token_positions, lead, t, 0, "TransformerLM")
        logits = self.lm_head(self._hidden(ids2, pos))
        return logits.reshape(lead + (t, self.vocab_size))
        ### END SOLUTION

    def _new_caches(self, batch_size):
        head_dim = self.d_model // self.num_heads
        return [KVCache(batch_size, self.num_heads, self.context_length, head_dim, self.lm_head.weight.dtype)
                for _ in self.layers]

    def _next_logits(self, ids, caches=None, start=0):
        pos = np.arange(start, start + ids.shape[1])
        return self.lm_head(self._hidden(ids, pos, caches)[:, -1]).data

    def generate(self, prompt_tokens, max_new_tokens=50, temperature=1.0, top_k=None, seed=None, rng=None,
                 use_cache=True):
        "Continue `prompt_tokens` (B, T) or (T,) like GPT.generate (KV cache, no graph, context cropping)."
        return generate_tokens(self, prompt_tokens, max_new_tokens, temperature, top_k, seed, rng, use_cache)

    def extra_repr(self):
        return (f"vocab_size={self.vocab_size}, context_length={self.context_length}, d_model={self.d_model}, "
                f"num_layers={self.num_layers}, num_heads={self.num_heads}, d_ff={self.d_ff}, rope_theta={self.rope_theta:g}")

# %% [markdown]
# The functional form takes the weights as a dictionary with the state-dict names (CS336's
# `run_transformer_lm` adapter has this signature). It builds the module and *binds* the given
# tensors in place of the parameters, so when the weights are tinytorch tensors that require
# gradients, the gradients flow back to them. Arrays (NumPy, or CPU torch tensors) are wrapped
# in their own dtype. Missing or unexpected names, or a wrong shape, raise one error listing
# all of them.

# %%
#| export
def _bind_weights(model, weights, who):
    "Put the given tensors in place of the model's parameters (no copy), after checking names and shapes."
    params = OrderedDict(model._state_entries())
    missing = [k for k in params if k not in weights]
    unexpected = [k for k in weights if k not in params]
    wrong = [f"{k} expected {params[k].shape}, got {tuple(np.shape(_to_numpy(weights[k])))}"
             for k in params if k in weights and tuple(np.shape(_to_numpy(weights[k]))) != params[k].shape]
    if missing or unexpected or wrong:
        parts = ([f"missing keys: {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected keys: {', '.join(unexpected)}"] if unexpected else []) + \
                ([f"shape mismatches: {'; '.join(wrong)}"] if wrong else [])
        raise StateDictError(f"{who}: " + " | ".join(parts))
    modules = dict(model.named_modules())
    for name, value in weights.items():
        owner, _, attr = name.rpartition(".")
        if not isinstance(value, Tensor):
            arr = _to_numpy(value)
            value = Tensor(arr, dtype=arr.dtype)
        setattr(modules[owner], attr, value)
    return model


def transformer_lm(vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta, weights, in_indices):
    "Functional TransformerLM: logits (..., T, vocab_size) of `in_indices` (..., T) under the given `weights` dict."
    model = TransformerLM(vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta)
    return _bind_weights(model, weights, "transformer_lm")(in_indices)

# %%
def _tiny_lm(seed=0, **kw):
    manual_seed(seed)
    args = dict(vocab_size=13, context_length=8, d_model=8, num_layers=2, num_heads=2, d_ff=12, rope_theta=10000.0)
    args.update(kw)
    return TransformerLM(**args).double()

CS336_NAMES = ["token_embeddings.weight", "layers.0.ln1.weight", "layers.0.attn.q_proj.weight",
               "layers.0.attn.k_proj.weight", "layers.0.attn.v_proj.weight", "layers.0.attn.output_proj.weight",
               "layers.0.ln2.weight", "layers.0.ffn.w1.weight", "layers.0.ffn.w2.weight", "layers.0.ffn.w3.weight"]

def test_transformer_lm_names_and_no_ties():
    model = _tiny_lm()
    names = list(model.state_dict())
    assert names[:10] == CS336_NAMES and names[-2:] == ["ln_final.weight", "lm_head.weight"] and len(names) == 21
    assert model.lm_head.weight is not model.token_embeddings.weight
    assert TransformerLM(100, 16, 64, 1, 4).d_ff == 192                    # default 8/3 * 64 rounded up to 64
    w = TransformerLM(50, 16, 64, 1, 4).layers[0].ffn.w1.weight.data
    assert np.abs(w).max() <= 3 * np.sqrt(2 / (64 + 192)) + 1e-6           # truncated at three standard deviations

def test_transformer_lm_batch_dims_causality_and_positions():
    model = _tiny_lm()
    ids = np.random.default_rng(0).integers(0, 13, size=(2, 3, 5))
    logits = model(ids)
    assert logits.shape == (2, 3, 5, 13)
    assert np.allclose(logits.data[1, 2], model(ids[1, 2][None]).data[0], atol=1e-13)
    changed = ids.copy(); changed[..., 3:] = 0
    assert np.allclose(model(changed).data[..., :3, :], logits.data[..., :3, :], atol=1e-13)
    shifted = model(ids[0], token_positions=np.arange(2, 7))            # RoPE sees only relative positions...
    assert np.allclose(shifted.data, logits.data[0], atol=1e-12)        # ...so a common shift changes nothing

def test_transformer_lm_gradcheck_and_functional():
    model = _tiny_lm(d_model=4, num_heads=2, d_ff=6, vocab_size=5, num_layers=1)
    ids = np.array([[1, 4, 0], [2, 2, 3]])
    names = list(model.state_dict())
    def f(*ws):
        return transformer_lm(5, 8, 4, 1, 2, 6, 10000.0, dict(zip(names, ws)), ids)
    weights = [Tensor(v + np.random.default_rng(i).standard_normal(v.shape) * 0.1, dtype=np.float64)
               for i, v in enumerate(model.state_dict().values())]
    assert gradcheck(f, weights)
    model.load_state_dict({n: w.data for n, w in zip(names, weights)})
    assert np.allclose(f(*weights).data, model(ids).data, atol=1e-14)

def test_transformer_lm_generate_matches_rollout():
    model = _tiny_lm(seed=5)
    prompt = np.array([[1, 2, 3], [7, 7, 7]])
    out = model.generate(prompt, 10, temperature=0)                         # crosses context_length 8
    assert out._node is None and np.array_equal(out.data, _argmax_rollout(model, prompt, 10))

def test_transformer_lm_errors():
    model = _tiny_lm()
    with pytest.raises(ValueError, match="sequence length 9 exceeds context_length 8"):
        model(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="token id 13 is out of range for vocab_size 13"):
        model(np.array([[13]]))
    with pytest.raises(ValueError, match="d_model 10 is not divisible by num_heads 4"):
        TransformerLM(10, 8, 10, 1, 4)
    with pytest.raises(StateDictError, match=r"missing keys: lm_head.weight \| unexpected keys: head"):
        sd = model.state_dict(); sd["head"] = sd.pop("lm_head.weight")
        transformer_lm(13, 8, 8, 2, 2, 12, 10000.0, sd, np.array([[1]]))

# %%
if __name__ == "__main__":
    analyze_parameter_scaling()
    print()
    analyze_attention_memory()
    manual_seed(0)
    model = GPT.from_config(GPTConfig.shakespeare_char())
    print(model.config, f"\n{model.num_parameters():,} parameters")
    print(model.generate([[0, 1, 2]], max_new_tokens=10, temperature=0.8, top_k=5, seed=0))
