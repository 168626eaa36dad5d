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
# # 13 LLaMA
# > RMSNorm, SwiGLU, rotary attention and the LLaMA-style TransformerLM with CS336's names.
#
# Five years of practice changed GPT-2's recipe in a few places, and LLaMA (Touvron et al.,
# 2023) collected the changes. This module builds the normalisation, the feed-forward
# network and the attention layer of that recipe, and the whole model, with the names and
# signatures of Stanford's CS336 so that its tests and checkpoints fit.

# %%
#| default_exp models.llama

# %%
#| export
import math

import numpy as np
from collections import OrderedDict

from tinytorch.core.tensor import Tensor, replaceable, get_rng, DEFAULT_DTYPE
from tinytorch.core.ops import cat
from tinytorch.core.autograd import no_grad, is_grad_enabled
from tinytorch.core.activations import silu
from tinytorch.core.layers import Module, Parameter, Linear, ModuleList, StateDictError, linear
from tinytorch.core.embeddings import Embedding, RotaryEmbedding
from tinytorch.core.attention import KVCache, fused_qkv_attention
from tinytorch import generation
from tinytorch.models.transformer import (cast, check_normalized_shape, check_heads, check_tokens,
                                          check_token_range, as_token_ids, to_numpy)

# %%
import pytest
from tinytorch.core.tensor import manual_seed
from tinytorch.core.autograd import gradcheck

def _t(*shape, seed=0, dtype=np.float64, scale=1.0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape) * scale, dtype=dtype)

# %% [markdown]
# ## RMSNorm
#
# RMSNorm (Zhang and Sennrich, 2019), used by LLaMA, drops the mean and the shift: it only
# rescales each vector by its root mean square,
#
# $$y_i = \gamma_i\,\frac{x_i}{\mathrm{RMS}(x)},\qquad \mathrm{RMS}(x) = \sqrt{\tfrac1D\textstyle\sum_i x_i^2 + \varepsilon}.$$
#
# It is cheaper than LayerNorm and works as well in practice. Written with tensor ops
# (`*`, `mean`, `sqrt`, `/`), autograd derives its backward pass; module 18 replaces it by a
# fused kernel whose gradient is LayerNorm's without the mean term.
#
# The squares of float16 activations overflow easily (65504 is float16's largest value, so
# any $|x_i| > 256$ overflows $x_i^2$), which is why CS336 and LLaMA upcast to float32 inside
# the norm and cast the result back: we do the same.

# %%
#| export
@replaceable("rms_norm")
def rms_norm(x, normalized_shape, weight=None, eps=1e-5):
    """x / sqrt(mean(x^2) + eps) * weight over the trailing `normalized_shape` dims.

    Returns a tensor of x's shape and dtype; float16 input is computed in float32 (module 12's `cast`)
    and cast back. Built from `*`, `mean`, `sqrt`, `/`: autograd derives the backward."""
    axes = tuple(range(x.ndim - len(check_normalized_shape(x, normalized_shape, "rms_norm")), x.ndim))
    ### BEGIN SOLUTION
    h = cast(x, np.float32) if x.dtype == np.float16 else x
    y = h / ((h * h).mean(axis=axes, keepdims=True) + eps).sqrt()
    if weight is not None: y = y * weight
    return cast(y, x.dtype)
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
# which suits matrix-multiply kernels (CS336's convention). The function is
# $W_2(\mathrm{SiLU}(W_1x)\odot W_3x)$,
# and it is written exactly so, with module 05's `linear` and module 04's `silu`; module 18
# replaces it by one fused op whose three forward and five backward GEMMs share their
# temporaries.

# %%
#| export
def swiglu_hidden_dim(d_model, multiple_of=64):
    "The SwiGLU hidden size: 8/3 * d_model rounded up to a multiple of `multiple_of`."
    return multiple_of * -(-(8 * d_model) // (3 * multiple_of))


@replaceable("swiglu")
def swiglu(x, w1, w2, w3):
    """w2 @ (silu(w1 @ x) * (w3 @ x)) over any leading dims, no biases: module 05's linear and module 04's silu.

    x is (..., d_model), w1 and w3 (d_ff, d_model), w2 (d_model, d_ff); returns (..., d_model)."""
    if x.shape[-1:] != (w1.shape[1],):
        raise ValueError(f"swiglu: input of shape {x.shape} does not match w1 of shape {w1.shape}; "
                         f"expected last dimension {w1.shape[1]}")
    ### BEGIN SOLUTION
    return linear(silu(linear(x, w1)) * linear(x, w3), w2)
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
# input projections run as one GEMM on their concatenated weights and feed module 10's fused
# `fused_qkv_attention`, which applies RoPE and the causal mask and can use a KV cache; the
# concatenation is itself a graph op, so each weight still receives its own gradient.
#
# RoPE uses interleaved pairs `(x[2i], x[2i+1])`, the convention of the RoFormer paper, Meta's
# LLaMA code and CS336 (module 09 explains the relation to Hugging Face's half-split layout).
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
    pos = as_token_ids(token_positions, f"{who}: token_positions")
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
        check_heads(d_model, num_heads, "CausalSelfAttention", "d_model")
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
        "Causal attention over x (..., T, d_model): q, k, v in one packed matmul, RoPE on q and k, module 10's attention, output_proj."
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
        check_heads(d_model, num_heads, "TransformerBlockLM", "d_model")
        rope = RotaryEmbedding(d_model // num_heads, theta, max_seq_len) if rope is None else rope
        self.ln1 = RMSNorm(d_model)
        self.attn = CausalSelfAttention(d_model, num_heads, rope)
        self.ln2 = RMSNorm(d_model)
        self.ffn = SwiGLU(d_model, d_ff)

    def forward(self, x, token_positions=None, kv_cache=None):
        "Pre-norm residual block: x + attn(ln1(x)), then x + ffn(ln2(x)); the same shape out as in."
        ### BEGIN SOLUTION
        x = x + self.attn(self.ln1(x), token_positions, kv_cache)
        return x + self.ffn(self.ln2(x))
        ### END SOLUTION


class TransformerLM(Module):
    "LLaMA-style decoder (CS336): embeddings, RMSNorm/RoPE/SwiGLU blocks, final RMSNorm, untied lm_head."
    def __init__(self, vocab_size, context_length, d_model, num_layers, num_heads, d_ff=None, rope_theta=10000.0):
        super().__init__()
        check_heads(d_model, num_heads, "TransformerLM", "d_model")
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
        ids = as_token_ids(tokens, "TransformerLM: tokens")
        if ids.ndim == 0 or ids.shape[-1] == 0:
            raise ValueError(f"TransformerLM: tokens must have shape (..., seq_len) with seq_len >= 1, got {ids.shape}")
        t = ids.shape[-1]
        if t > self.context_length:
            raise ValueError(f"TransformerLM: sequence length {t} exceeds context_length {self.context_length}; "
                             f"crop the context to the last {self.context_length} tokens")
        check_token_range(ids, self.vocab_size, "TransformerLM")
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

    def generate(self, prompt_tokens, max_new_tokens=50, temperature=1.0, top_k=None, top_p=None, seed=None,
                 rng=None, use_cache=True, stop_tokens=None):
        "Continue `prompt_tokens` (B, T) or (T,) like GPT.generate (module 11's loop: KV cache, no graph, cropping)."
        ids, unbatched = check_tokens(prompt_tokens, self.vocab_size, None, "TransformerLM.generate")
        out = generation.generate(self, ids[0] if unbatched else ids, max_new_tokens, temperature, top_k, top_p,
                                  seed=seed, rng=rng, use_cache=use_cache, stop_tokens=stop_tokens)
        return Tensor(np.asarray(out, dtype=np.int64), dtype=np.int64)

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
    wrong = [f"{k} expected {params[k].shape}, got {tuple(np.shape(to_numpy(weights[k])))}"
             for k in params if k in weights and tuple(np.shape(to_numpy(weights[k]))) != params[k].shape]
    if missing or unexpected or wrong:
        parts = ([f"missing keys: {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected keys: {', '.join(unexpected)}"] if unexpected else []) + \
                ([f"shape mismatches: {'; '.join(wrong)}"] if wrong else [])
        raise StateDictError(f"{who}: " + " | ".join(parts))
    modules = dict(model.named_modules())
    for name, value in weights.items():
        owner, _, attr = name.rpartition(".")
        if not isinstance(value, Tensor):
            arr = to_numpy(value)
            value = Tensor(arr, dtype=arr.dtype)
        setattr(modules[owner], attr, value)
    return model


def transformer_lm(vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta, weights, in_indices):
    "Functional TransformerLM: logits (..., T, vocab_size) of `in_indices` (..., T) under the given `weights` dict."
    model = TransformerLM(vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta)
    return _bind_weights(model, weights, "transformer_lm")(in_indices)

# %%
def _argmax_rollout(model, prompt, n):
    "Greedy decoding the slow way: a full forward over the (cropped) context for every token."
    seq = np.array(prompt)
    for _ in range(n):
        logits = model(seq[:, -model.max_seq_len:]).data
        seq = np.concatenate([seq, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return seq

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

# %% [markdown]
# ## Experiments to try
#
# 1. Scale an input row by 10 and pass it through `RMSNorm` and `LayerNorm`: both outputs stay
#    the same, but only LayerNorm also ignores adding a constant to the row.
# 2. Compare the parameters of a GPT-2 `MLP` and a `SwiGLU` of the same width: SwiGLU's three
#    matrices at hidden size about 8/3·d hold about as many weights as GPT-2's two at 4·d.
# 3. Rotate the same query and key by positions (3, 5) and (10, 12) with RoPE: their dot product
#    is the same, because it depends only on the distance between the positions.

# %% [markdown]
# ## Run this module's tests
#
# **How to test and complete.** The cell below runs every test of this notebook in the kernel
# and prints one line per test: PASS, FAIL with the reason (for a value out of tolerance:
# where, and by how much) or TODO for a function not written yet. From the shell,
# `tito module test 13` runs the same tests, and `tito module complete 13` tests your
# notebook, exports it into `tinytorch/` and runs the package tests (`tests/test_13_llama.py`).

# %%
from tito.notebook import run_tests

if __name__ == "__main__":
    run_tests()
