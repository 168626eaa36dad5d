"""Module 18's fused kernels, each against its textbook twin (`fn.textbook`): values and every
gradient in float64 (1e-10 relative) and float32, the same errors, and the registration switch
(registered: the kernel's op is recorded; unregistered or inside `textbook()`: the textbook code runs)."""
import contextlib
import math

import numpy as np
import pytest

from tinytorch.accel import (ATTENTION_KERNELS, blocked_qkv_attention, disable, enable, enabled,
                             fused_cross_entropy, fused_gelu, fused_layer_norm, fused_linear, fused_linear_gelu,
                             fused_log_softmax, fused_rms_norm, fused_silu, fused_softmax, fused_swiglu, textbook,
                             _blocks, _scores_are_small)
from tinytorch.core.attention import KVCache
from tinytorch.core.tensor import Tensor, register_kernel

import importlib

def _leaves(arrays, dtype):
    return [None if a is None else Tensor(a.astype(dtype), dtype=dtype, requires_grad=True) for a in arrays]

def _value_and_grads(fn, arrays, dtype, call):
    ts = _leaves(arrays, dtype)
    out = call(fn, *ts)
    out.backward(np.random.default_rng(7).standard_normal(out.shape).astype(dtype))
    return [out.data] + [t.grad.data for t in ts if t is not None]

def _assert_twins(kernel, twin, arrays, call, name, recorded=None):
    recorded = recorded or name
    for dtype, rtol in ((np.float64, 1e-10), (np.float32, 2e-5)):
        fast, slow = _value_and_grads(kernel, arrays, dtype, call), _value_and_grads(twin, arrays, dtype, call)
        for i, (a, b) in enumerate(zip(fast, slow)):
            assert a.dtype == b.dtype == dtype and a.shape == b.shape, (name, i)
            err = np.abs(a - b).max() / np.abs(b).max()
            assert err <= rtol, f"{name} {np.dtype(dtype).name}: {'value' if i == 0 else f'gradient {i}'} differs by {err:.2e} relative"
    ts = _leaves(arrays, np.float64)
    package = getattr(importlib.import_module(twin.__module__), twin.__name__)
    was = enabled()
    try:
        register_kernel(name, kernel)
        assert call(package, *ts).grad_fn == recorded          # registration on: the kernel's op
        register_kernel(name, None)
        assert call(package, *ts).grad_fn != recorded          # off: the textbook code
    finally:
        (enable if was else disable)()

def _r(*shape, seed, scale=1.0, offset=0.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + offset

# Softmax, GELU, linear layers and cross-entropy

import tinytorch.core.activations as _act
import tinytorch.core.layers as _layers
import tinytorch.core.losses as _losses

@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_fused_gelu_equals_textbook(approximate):
    _assert_twins(fused_gelu, _act.gelu.textbook, [_r(3, 5, 7, seed=20, scale=3.0)],
                  lambda f, x: f(x, approximate=approximate), "gelu", "gelu_tanh" if approximate == "tanh" else "gelu")

def test_fused_silu_equals_textbook():
    _assert_twins(fused_silu, _act.silu.textbook, [_r(3, 5, 7, seed=21, scale=4.0)], lambda f, x: f(x), "silu")

@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_fused_softmax_equals_textbook(name, axis):
    kernel = {"softmax": fused_softmax, "log_softmax": fused_log_softmax}[name]
    _assert_twins(kernel, getattr(_act, name).textbook, [_r(3, 4, 9, seed=22, scale=5.0)],
                  lambda f, x: f(x, dim=axis), name)

@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_equals_textbook(bias):
    arrays = [_r(2, 7, 12, seed=23, scale=2.0), _r(20, 12, seed=24, scale=0.5), _r(20, seed=25) if bias else None]
    _assert_twins(fused_linear, _layers.linear.textbook, arrays, lambda f, x, w, b: f(x, w, b), "linear")

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignored", [0, 3])
def test_fused_cross_entropy_equals_textbook(reduction, label_smoothing, ignored):
    t = np.random.default_rng(26).integers(0, 11, size=(3, 5))
    t.reshape(-1)[:ignored] = -100
    _assert_twins(fused_cross_entropy, _losses.cross_entropy.textbook, [_r(3, 5, 11, seed=27, scale=3.0)],
                  lambda f, x: f(x, t, reduction=reduction, label_smoothing=label_smoothing), "cross_entropy")

def test_fused_elementwise_kernels_raise_the_textbook_errors():
    x, w = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))
    cases = [(fused_gelu, _act.gelu.textbook, (x, "exact")), (fused_gelu, _act.gelu.textbook, (Tensor([1, 2]),)),
             (fused_silu, _act.silu.textbook, (np.ones(2),)), (fused_softmax, _act.softmax.textbook, (x, 2)),
             (fused_log_softmax, _act.log_softmax.textbook, (x, -3)), (fused_linear, _layers.linear.textbook, (x, w)),
             (fused_linear, _layers.linear.textbook, (Tensor(np.ones((2, 5), dtype=np.int64)), w)),
             (fused_cross_entropy, _losses.cross_entropy.textbook, (x, np.array([0, 3]))),
             (fused_cross_entropy, _losses.cross_entropy.textbook, (x, np.zeros(2), -100, "avg"))]
    for kernel, twin, args in cases:
        with pytest.raises(Exception) as fast: kernel(*args)
        with pytest.raises(Exception) as slow: twin(*args)
        assert type(fast.value) is type(slow.value) and str(fast.value) == str(slow.value), (kernel.__name__, args)
    with pytest.warns(RuntimeWarning, match="every target equals ignore_index"):
        assert np.isnan(fused_cross_entropy(x, np.full(2, -100)).item())


# Attention

import tinytorch.core.attention as _attention
from tinytorch.core.tensor import manual_seed
from tinytorch.core.autograd import no_grad

def _att_run(fn, arrays, dtype, call, textbook_mode):
    ts = [Tensor(a.astype(dtype), dtype=dtype, requires_grad=True) for a in arrays]
    manual_seed(3)                                                   # the same dropout draw for both
    with (textbook() if textbook_mode else contextlib.nullcontext()):
        out = call(fn, *ts)
    out.backward(np.random.default_rng(7).standard_normal(out.shape).astype(dtype))
    return [out.data] + [t.grad.data for t in ts]

def _assert_attention_twins(op, arrays, call, rtol32=2e-5):
    kernel, twin = ATTENTION_KERNELS[op], getattr(_attention, op).textbook
    for dtype, rtol in ((np.float64, 1e-10), (np.float32, rtol32)):
        fast, slow = _att_run(kernel, arrays, dtype, call, False), _att_run(twin, arrays, dtype, call, True)
        for i, (a, b) in enumerate(zip(fast, slow)):
            assert a.dtype == b.dtype == dtype and a.shape == b.shape, (op, i)
            err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
            assert err <= rtol, f"{op} {np.dtype(dtype).name}: {'value' if i == 0 else f'gradient {i}'} differs by {err:.2e} relative"
    ts = [Tensor(a, dtype=np.float64, requires_grad=True) for a in arrays]
    was = enabled()
    try:
        register_kernel(op, kernel)
        assert call(getattr(_attention, op), *ts).grad_fn == op          # registration on
        register_kernel(op, None)
        assert call(getattr(_attention, op), *ts).grad_fn != op          # off: the textbook runs
    finally:
        (enable if was else disable)()

def _qkv(*shapes, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [scale * rng.standard_normal(s) for s in shapes]

_DEAD = np.random.default_rng(1).random((6, 9)) > 0.3
_DEAD[2] = False                                                     # a row that may read nothing

@pytest.mark.parametrize("shapes,kw", [
    (((2, 3, 7, 8),) * 3, dict()),
    (((2, 3, 7, 8),) * 3, dict(is_causal=True)),
    (((2, 5, 8), (2, 9, 8), (2, 9, 4)), dict(is_causal=True, scale=0.3)),          # T_q != T_k: top-left
    (((2, 3, 6, 8), (2, 3, 9, 8), (2, 3, 9, 8)), dict(mask=_DEAD)),
    (((2, 3, 6, 8), (2, 3, 9, 8), (2, 3, 9, 8)), dict(mask=np.where(_DEAD, 0.0, -np.inf), is_causal=True)),
    (((2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 3)), dict(dropout_p=0.4, is_causal=True)),
    (((1, 2, 200, 16),) * 3, dict(is_causal=True)),                                # blocks of 64 query rows
    (((1, 2, 130, 16), (1, 2, 200, 16), (1, 2, 200, 16)), dict(is_causal=True, mask=np.ones(200, bool)))])
def test_blocked_sdpa_equals_textbook(shapes, kw):
    _assert_attention_twins("scaled_dot_product_attention", _qkv(*shapes), lambda f, q, k, v: f(q, k, v, **kw))

def test_blocked_sdpa_large_scores_and_mask_gradient_equal_textbook():
    q, k, v = _qkv((2, 5, 8), (2, 6, 8), (2, 6, 3))
    q[..., 0] += 30.0                                             # scores near 900: exp overflows unless shifted
    k[..., 0] = 30.0 + 0.05 * k[..., 0]
    assert len(_blocks(200, 200, 0)) == 4 and not _scores_are_small(q / math.sqrt(8), k)
    _assert_attention_twins("scaled_dot_product_attention", [q, k, v], lambda f, q, k, v: f(q, k, v, is_causal=True),
                            rtol32=1e-3)                          # float32 scores near 900 carry errors of 5e-5
    arrays = _qkv((2, 3, 6, 8), (2, 3, 7, 8), (2, 3, 7, 8), (2, 1, 6, 7), seed=2)   # a learnable additive bias
    _assert_attention_twins("scaled_dot_product_attention", arrays, lambda f, q, k, v, m: f(q, k, v, mask=m))

def _rope_tables(t, hd, positions=None):
    from tinytorch.core.embeddings import RotaryEmbedding
    cos, sin = RotaryEmbedding(hd, max_seq_len=256).tables(t, positions, np.float64)
    return (cos, sin) if positions is None else (cos[:, None], sin[:, None])

@pytest.mark.parametrize("case", ["causal", "rope", "rope_positions_mask", "bool_mask", "long"])
def test_blocked_qkv_attention_equals_textbook(case):
    t = 200 if case == "long" else 9
    qkv = _qkv((2, t, 48), seed=4)
    cos, sin = _rope_tables(t, 4, np.array([np.arange(t), np.arange(t) + 5]) if case == "rope_positions_mask" else None)
    if case == "causal": call = lambda f, a: f(a, 4)
    elif case in ("rope", "long"): call = lambda f, a: f(a, 4, rope_cos=cos, rope_sin=sin)
    elif case == "bool_mask": call = lambda f, a: f(a, 4, causal=False, mask=_qkv((2, 1, 1, t))[0] > -0.5, dropout_p=0.2)
    else:
        qkv.append(_qkv((2, 1, t, t), seed=5)[0])
        call = lambda f, a, m: f(a, 4, mask=m, rope_cos=cos, rope_sin=sin)
    _assert_attention_twins("fused_qkv_attention", qkv, call)

@pytest.mark.parametrize("causal", [True, False])
def test_blocked_qkv_attention_kv_cache_equals_textbook(causal):
    x = _qkv((2, 12, 48), seed=6)[0]
    cos, sin = _rope_tables(12, 4)
    outs, caches = [], []
    for fn in (blocked_qkv_attention, _attention.fused_qkv_attention.textbook):
        cache = KVCache(2, 4, 16, 4, dtype=np.float64)
        with no_grad(), textbook():
            outs.append(np.concatenate([fn(Tensor(x[:, a:b], dtype=np.float64), 4, causal, None, cos[a:b], sin[a:b],
                                           0.0, cache).data for a, b in [(0, 5), (5, 6), (6, 9), (9, 10), (10, 12)]], 1))
        caches.append(cache)
    assert np.abs(outs[0] - outs[1]).max() <= 1e-12 * np.abs(outs[1]).max()
    assert np.abs(caches[0].keys - caches[1].keys).max() <= 1e-15 and caches[0].length == caches[1].length == 12

# LayerNorm, the GPT-2 MLP, RMSNorm and SwiGLU

import tinytorch.models.transformer as _gpt
import tinytorch.models.llama as _llama

@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("norm_shape", [(16,), (3, 16)])
def test_fused_layer_norm_equals_textbook(affine, norm_shape):
    arrays = [_r(2, 3, 16, seed=0, scale=3.0, offset=1.5)] + ([_r(*norm_shape, seed=1), _r(*norm_shape, seed=2)]
                                                              if affine else [None, None])
    call = lambda f, x, w, b: f(x, norm_shape, w, b, eps=1e-5)
    _assert_twins(fused_layer_norm, _gpt.layer_norm.textbook, arrays, call, "layer_norm")

@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_gelu_equals_textbook(bias):
    arrays = [_r(2, 7, 12, seed=3, scale=2.0), _r(20, 12, seed=4, scale=0.5), _r(20, seed=5) if bias else None]
    _assert_twins(fused_linear_gelu, _gpt.linear_gelu.textbook, arrays, lambda f, x, w, b: f(x, w, b), "linear_gelu")

@pytest.mark.parametrize("affine", [True, False])
def test_fused_rms_norm_equals_textbook(affine):
    arrays = [_r(2, 5, 24, seed=6, scale=2.0), _r(24, seed=7) if affine else None]
    _assert_twins(fused_rms_norm, _llama.rms_norm.textbook, arrays, lambda f, x, w: f(x, 24, w, eps=1e-5), "rms_norm")

def test_fused_swiglu_equals_textbook():
    arrays = [_r(2, 5, 16, seed=8, scale=2.0), _r(48, 16, seed=9, scale=0.4), _r(16, 48, seed=10, scale=0.4),
              _r(48, 16, seed=11, scale=0.4)]
    _assert_twins(fused_swiglu, _llama.swiglu.textbook, arrays, lambda f, *ts: f(*ts), "swiglu")

def test_fused_norms_float16_and_errors_equal_textbook():
    x = Tensor(_r(4, 64, seed=12, scale=300.0), dtype=np.float16)
    for kernel, twin in ((fused_layer_norm, _gpt.layer_norm.textbook), (fused_rms_norm, _llama.rms_norm.textbook)):
        a, b = kernel(x, 64), twin(x, 64)
        assert a.dtype == b.dtype == np.float16 and np.abs(a.data.astype(np.float32) - b.data).max() <= 2e-3
        for bad, exc in ((Tensor(np.ones((2, 4))), ValueError), (Tensor(np.ones((2, 64), dtype=np.int64)), TypeError)):
            with pytest.raises(exc) as fast: kernel(bad, 64)
            with pytest.raises(exc) as slow: twin(bad, 64)
            assert str(fast.value) == str(slow.value)
    w = Tensor(np.ones((6, 4)))
    with pytest.raises(ValueError) as fast: fused_swiglu(Tensor(np.ones((2, 5))), w, Tensor(np.ones((4, 6))), w)
    with pytest.raises(ValueError) as slow: _llama.swiglu.textbook(Tensor(np.ones((2, 5))), w, Tensor(np.ones((4, 6))), w)
    assert str(fast.value) == str(slow.value) and "swiglu: input of shape (2, 5) does not match w1" in str(fast.value)
