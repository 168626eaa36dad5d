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
# # 12 GPT
# > LayerNorm, the GELU feed-forward network, the pre-norm block, GPT-2 and its sizes.
#
# Everything so far was a part; this module assembles the machine. A decoder-only
# transformer is a stack of identical *blocks* between an embedding at the bottom and a
# projection back to the vocabulary at the top. Each block lets every position read from
# the positions before it (attention, module 10) and then transforms each position on its
# own (the feed-forward network), and each of the two sub-layers is wrapped as
# `x = x + sublayer(norm(x))`: a normalisation first ("pre-norm"), a residual connection
# around it.
#
# We build GPT-2 (Radford et al., 2019) exactly as its reference code defines it:
# LayerNorm, learned absolute positions, a GELU MLP with 4x expansion, biases everywhere,
# and the output projection *tied* to the token embedding. Its logits and gradients equal
# `transformers.GPT2LMHeadModel`'s (module 14 moves weights between the two).

# %%
#| default_exp models.transformer

# %%
#| export
import math
from collections import OrderedDict
from dataclasses import dataclass, asdict, fields

import numpy as np
from tinytorch.core.tensor import Tensor, record, replaceable, get_rng, DEFAULT_DTYPE
from tinytorch.core.autograd import derivative
from tinytorch.core.activations import gelu
from tinytorch.core.layers import Module, Parameter, Linear, Dropout, ModuleList, linear
from tinytorch.core.losses import cross_entropy
from tinytorch.core.embeddings import Embedding, PositionalEmbedding, TokenIdRangeError
from tinytorch.core.attention import MultiHeadAttention, KVCache
from tinytorch import generation

# %% [markdown]
# ## LayerNorm
#
# How to test and complete this module from the shell: `tito module test 12` runs its tests,
# `tito module complete 12` tests, exports and records it.
#
# LayerNorm (Ba et al., 2016) normalises each position's feature vector to zero mean and unit
# variance, then applies a learned scale $\gamma$ and shift $\beta$:
#
# $$\mu = \tfrac1D\textstyle\sum_i x_i,\qquad \sigma^2 = \tfrac1D\sum_i (x_i-\mu)^2,\qquad
# \hat x_i = \frac{x_i-\mu}{\sqrt{\sigma^2+\varepsilon}},\qquad y_i = \gamma_i \hat x_i + \beta_i .$$
#
# The variance is the biased one (divide by $D$, `correction=0`), as in PyTorch. We write it
# with tensor ops (`mean`, `var`, `sqrt`), and autograd derives the backward pass.
# Inputs of lower precision than float32 (float16) are normalised in float32 and the result
# is cast back, as PyTorch does: `cast` is a one-line op whose gradient is the incoming
# gradient cast back to the input's dtype. Module 18 replaces `layer_norm` by a fused kernel
# with a hand-written backward pass, tested equal to this one.

# %%
#| export
def cast(x, dtype):
    "x converted to `dtype` as a graph op (records 'cast'; its gradient is cast back to x's dtype)."
    dtype = np.dtype(dtype)
    if x.dtype == dtype: return x
    return record("cast", x.data.astype(dtype), (x,), (x.dtype,))


@derivative("cast")
def _cast_backward(g, dtype):
    return (g.astype(dtype),)


def check_normalized_shape(x, normalized_shape, op):
    "The trailing dims `normalized_shape` as a tuple, after checking x ends with them and is floating-point."
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    if x.shape[len(x.shape) - len(shape):] != shape or len(shape) > x.ndim:
        raise ValueError(f"{op}: input of shape {x.shape} does not end with normalized_shape {shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point input, got dtype {x.dtype}")
    return shape


@replaceable("layer_norm")
def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise x over its trailing `normalized_shape` dims, then scale by `weight` and shift by `bias`.

    Returns a tensor of x's shape and dtype. float16 input is computed in float32 (`cast`) and cast
    back. Built from `mean`, `var(correction=0)`, `sqrt`, `*`, `+`: autograd derives the backward."""
    axes = tuple(range(x.ndim - len(check_normalized_shape(x, normalized_shape, "layer_norm")), x.ndim))
    ### BEGIN SOLUTION
    h = cast(x, np.float32) if x.dtype == np.float16 else x
    mu = h.mean(axis=axes, keepdims=True)
    var = h.var(axis=axes, keepdims=True, correction=0)
    y = (h - mu) / (var + eps).sqrt()
    if weight is not None: y = y * weight
    if bias is not None: y = y + bias
    return cast(y, x.dtype)
    ### END SOLUTION


class LayerNorm(Module):
    "Layer normalisation over the trailing `normalized_shape` dims (weight 1, bias 0 at init), as torch.nn.LayerNorm."
    def __init__(self, normalized_shape, eps=1e-5, bias=True):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
            else tuple(normalized_shape)
        self.eps = eps
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=DEFAULT_DTYPE))
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=DEFAULT_DTYPE)) if bias else None

    def forward(self, x):
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, bias={self.bias is not None}"

# %% [markdown]
# The tests below check the forward pass against the formula, the backward pass against
# finite differences (`gradcheck`, float64), and the float16 path. `tests/test_12_gpt.py`
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
    x.requires_grad = True
    layer_norm(x, 64).sum().backward()
    assert x.grad.dtype == np.float16 and np.abs(x.grad.data.astype(np.float32)).max() < 1e-2   # d(sum)/dx = 0

def test_layer_norm_errors():
    with pytest.raises(ValueError, match=r"layer_norm: input of shape \(2, 4\) does not end with normalized_shape \(5,\)"):
        LayerNorm(5)(Tensor(np.ones((2, 4))))
    with pytest.raises(TypeError, match="layer_norm: expected a floating-point input, got dtype int64"):
        layer_norm(Tensor(np.ones((2, 4), dtype=np.int64)), 4)

# %% [markdown]
# ## The GPT-2 feed-forward network
#
# After attention has mixed information across positions, the MLP transforms each position
# independently: expand to `hidden_dim` (4x the width by default), apply GELU, project back:
#
# $$\mathrm{MLP}(x) = W_2\,\mathrm{GELU}(W_1 x + b_1) + b_2 .$$
#
# GPT-2 uses the tanh approximation of GELU (Hendrycks and Gimpel, 2016), which Hugging Face
# calls `gelu_new`, module 04's `gelu(h, approximate="tanh")`:
#
# $$\mathrm{GELU}(h) \approx \tfrac12 h\left(1+\tanh\!\big(\sqrt{2/\pi}\,(h + 0.044715\,h^3)\big)\right).$$
#
# The first Linear and the GELU are one function, `linear_gelu(x, weight, bias)` =
# `gelu(linear(x, weight, bias), "tanh")`. The expanded activation is the largest tensor in
# the model (4x the residual stream), and naming the pair lets module 18 replace it by one
# fused op that computes the activation in place and turns the incoming gradient into the
# pre-activation's gradient in one pass.

# %%
#| export
@replaceable("linear_gelu")
def linear_gelu(x, weight, bias=None):
    "gelu_tanh(x @ weight.T + bias) over any leading dims: module 05's linear, then module 04's tanh GELU."
    ### BEGIN SOLUTION
    return gelu(linear(x, weight, bias), approximate="tanh")
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
        "dropout(fc2(gelu_tanh(fc1(x)))), with fc1 and the GELU as one `linear_gelu` call; same shape as x."
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
# The attention layer is module 10's `MultiHeadAttention`: a fused `qkv_proj`
# (`embed_dim -> 3 * embed_dim`), causal scaled dot-product attention, and `out_proj`.

# %%
#| export
def check_heads(embed_dim, num_heads, who, dim_name="embed_dim"):
    if num_heads <= 0 or embed_dim <= 0:
        raise ValueError(f"{who}: {dim_name} and num_heads must be positive, got {dim_name}={embed_dim}, num_heads={num_heads}")
    if embed_dim % num_heads:
        raise ValueError(f"{who}: {dim_name} {embed_dim} is not divisible by num_heads {num_heads}")


class TransformerBlock(Module):
    "Pre-norm GPT-2 block: x + attn(ln1(x)), then x + mlp(ln2(x))."
    def __init__(self, embed_dim, num_heads, mlp_ratio=4, dropout_prob=0.0, bias=True):
        super().__init__()
        check_heads(embed_dim, num_heads, "TransformerBlock")
        self.ln1 = LayerNorm(embed_dim, bias=bias)
        self.attn = MultiHeadAttention(embed_dim, num_heads, bias=bias, dropout=dropout_prob, causal=True)
        self.ln2 = LayerNorm(embed_dim, bias=bias)
        self.mlp = MLP(embed_dim, int(mlp_ratio * embed_dim), dropout_prob, bias=bias)

    def forward(self, x, kv_cache=None):
        "Pre-norm residual block: x + attn(ln1(x)), then x + mlp(ln2(x)); the same shape (B, T, C) out as in."
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
# `GPTConfig` is given; `tests/test_12_gpt.py` checks its presets and its validation.

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
        check_heads(self.embed_dim, self.num_heads, "GPTConfig")
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
# returns `(logits, loss)`, the loss being module 06's `cross_entropy` averaged over all
# positions (`ignore_index` targets excluded).

# %%
#| export
def as_token_ids(x, name):
    "Token ids as an integer ndarray (from a Tensor, array or list); a clear error for anything else."
    arr = x.data if isinstance(x, Tensor) else np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer token ids, got dtype {arr.dtype}")
    return arr


def to_numpy(value):
    "An ndarray from a NumPy array, a tinytorch Tensor or a CPU torch tensor (without importing torch)."
    if isinstance(value, Tensor): return value.data
    if hasattr(value, "detach"):                                   # torch.Tensor, duck-typed
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16": value = value.float()
        return value.numpy()
    return np.asarray(value)


def check_tokens(tokens, vocab_size, max_seq_len, who):
    "Validate token ids of shape (B, T) or (T,); return them as a (B, T) int64 array and whether to unbatch."
    ids = as_token_ids(tokens, f"{who}: tokens")
    if ids.ndim not in (1, 2):
        raise ValueError(f"{who}: tokens must have shape (batch, seq_len), or (seq_len,) for one sequence; "
                         f"got shape {ids.shape}")
    unbatched = ids.ndim == 1
    ids = ids.reshape(1, -1) if unbatched else ids
    if 0 in ids.shape:
        raise ValueError(f"{who}: tokens must hold at least one sequence of at least one position; got shape {ids.shape}")
    if max_seq_len is not None and ids.shape[1] > max_seq_len:
        raise ValueError(f"{who}: sequence length {ids.shape[1]} exceeds max_seq_len {max_seq_len}; "
                         f"crop the context to the last {max_seq_len} tokens")
    check_token_range(ids, vocab_size, who)
    return ids.astype(np.int64, copy=False), unbatched


def check_token_range(ids, vocab_size, who):
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
        "Logits (B, T, vocab) of token ids (B, T) (or (T,) for one sequence); with targets, (logits, mean cross-entropy)."
        ### BEGIN SOLUTION
        ids, unbatched = check_tokens(tokens, self.vocab_size, self.max_seq_len, "GPT")
        logits = self.lm_head(self._hidden(ids))
        if targets is not None:
            tgt = as_token_ids(targets, "GPT: targets")
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

    def generate(self, prompt_tokens, max_new_tokens=50, temperature=1.0, top_k=None, top_p=None, seed=None,
                 rng=None, use_cache=True, stop_tokens=None):
        "Continue `prompt_tokens` (B, T) or (T,) by `max_new_tokens` sampled tokens; greedy at temperature 0."
        ids, unbatched = check_tokens(prompt_tokens, self.vocab_size, None, "GPT.generate")
        out = generation.generate(self, ids[0] if unbatched else ids, max_new_tokens, temperature, top_k, top_p,
                                  seed=seed, rng=rng, use_cache=use_cache, stop_tokens=stop_tokens)
        return Tensor(np.asarray(out, dtype=np.int64), dtype=np.int64)

    # Hugging Face interop lives in module 14 (tinytorch.models.hf); these methods are where a
    # Hugging Face user looks for it, and they import that module only when called.
    @classmethod
    def from_hf_state_dict(cls, hf_state_dict, num_heads=None, dtype=None, **overrides):
        "Build a GPT sized from a Hugging Face GPT-2 state dict and load its weights (module 14)."
        from tinytorch.models.hf import gpt_from_hf_state_dict
        return gpt_from_hf_state_dict(hf_state_dict, num_heads=num_heads, dtype=dtype, cls=cls, **overrides)

    def to_hf_state_dict(self):
        "The weights as a Hugging Face GPT2LMHeadModel state dict (module 14)."
        from tinytorch.models.hf import to_hf_gpt2_state_dict
        return to_hf_gpt2_state_dict(self)

    def save_pretrained(self, directory, tokenizer=None):
        "Write a Hugging Face GPT-2 folder: config.json, model.safetensors, tokenizer files (module 14)."
        from tinytorch.models.hf import save_pretrained
        return save_pretrained(self, directory, tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path, dtype=None):
        "Load a Hugging Face GPT-2 folder (or a model in the local Hugging Face cache), sized by its config.json (module 14)."
        from tinytorch.models.hf import from_pretrained
        return from_pretrained(name_or_path, dtype=dtype, cls=cls)

    def extra_repr(self):
        c = self.config
        return (f"vocab_size={c.vocab_size}, embed_dim={c.embed_dim}, num_layers={c.num_layers}, "
                f"num_heads={c.num_heads}, max_seq_len={c.max_seq_len}")

# %% [markdown]
# The tests build small float64 models and check what must hold exactly: the weight is shared,
# the initialisation has the right scales, the model is causal, the loss is the cross-entropy
# of the logits. `tests/test_12_gpt.py` checks that every wrong input is refused by name, and
# `tests/test_14_interop.py` that logits and gradients equal Hugging Face's `GPT2LMHeadModel`.

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

# %% [markdown]
# ## Generating text
#
# `GPT.generate` is module 11's sampling loop, `tinytorch.generation.generate`, with the
# conventions of a model method: the prompt is `(B, T)` or `(T,)` token ids, and the result
# is a tensor of int64 ids holding the prompt followed by the new tokens (1-D for a 1-D
# prompt). GPT provides the two hooks that loop looks for: `_new_caches(batch_size)`, one
# `KVCache` per block, and `_next_logits(ids, caches, start)`, which runs the blocks on the
# new positions only and the head on the last position only. `use_cache=False` re-encodes
# the whole context at every step, the reference the test below compares against;
# `tests/test_12_gpt.py` checks seeded sampling, top-k, top-p and the argument errors.

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
# The figure 124,356,864 found in some course material is smaller by $12 \times 9C = 82{,}944$,
# exactly the Linear biases ($3C + C + 4C + C$ per block); nanoGPT's "123.65M" leaves out the
# position embedding. The four released sizes (124,439,808, 354,823,168, 774,030,080 and
# 1,557,611,200) are checked against Hugging Face in the tests.

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

# %%
if __name__ == "__main__":
    try:
        analyze_parameter_scaling()
        print()
        analyze_attention_memory()
        manual_seed(0)
        model = GPT.from_config(GPTConfig.shakespeare_char())
        print(model.config, f"\n{model.num_parameters():,} parameters")
        print(model.generate([[0, 1, 2]], max_new_tokens=10, temperature=0.8, top_k=5, seed=0))
    except NotImplementedError as e:
        print("skipped until the stubs above are written:", e)

# %% [markdown]
# ## Experiments to try
#
# 1. `parameter_breakdown` of GPT-2 small with 12 and 48 layers: each layer adds about 12·d².
# 2. Change the token at position 3 of a prompt: logits 0-2 stay equal to the last bit (causal).
# 3. Run `analyze_attention_memory(seq_lens=(1024, 2048))`: doubling the context quadruples
#    the memory of the attention weights.

# %% [markdown]
# ## Run this module's tests
#
# The cell below runs every test of this notebook in the kernel and prints PASS, FAIL (with
# the reason) or TODO per test; `tito module complete 12` runs them from the shell.

# %%
from tito.notebook import run_tests

if __name__ == "__main__":
    run_tests()
