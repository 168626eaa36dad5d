"""Attention (module 10) against PyTorch in float64: sdpa, MultiHeadAttention, KV cache; causality, errors.

These tests run module 10's textbook code: module 18's kernels for the two replaceable functions are
switched off here (module 18's own tests check that its kernels equal this code)."""
import numpy as np
import pytest

from tinytorch.core.attention import KVCache, MultiHeadAttention, fused_qkv_attention, scaled_dot_product_attention
from tinytorch.core.autograd import gradcheck, grad, no_grad
from tinytorch.core.tensor import KERNELS, Tensor, get_rng, manual_seed
from tinytorch.core.embeddings import RotaryEmbedding

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-10


@pytest.fixture(autouse=True)
def textbook_attention(monkeypatch):
    for name in ("scaled_dot_product_attention", "fused_qkv_attention"):
        monkeypatch.delitem(KERNELS, name, raising=False)


def _max_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _qkv(q_shape, k_shape, v_shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in (q_shape, k_shape, v_shape)]


def _compare_sdpa(q, k, v, mask=None, is_causal=False, scale=None, mask_grad=False, tol=TOL):
    """Values and gradients of q, k, v (and of a float mask) against torch, float64; returns the errors."""
    g = np.random.default_rng(99).standard_normal(q.shape[:-1] + v.shape[-1:])
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tm = None if mask is None else torch.tensor(mask if mask.ndim >= 2 else mask[None], requires_grad=mask_grad)
    ref = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, is_causal=is_causal, scale=scale)
    ref.backward(torch.tensor(g))
    ins = [Tensor(a, dtype=np.float64, requires_grad=True) for a in (q, k, v)]
    m = None if mask is None else (Tensor(mask, dtype=mask.dtype, requires_grad=mask_grad) if mask_grad else mask)
    out = scaled_dot_product_attention(*ins, mask=m, is_causal=is_causal, scale=scale)
    out.backward(g)
    errs = {"out": _max_err(out.data, ref.detach().numpy())}
    for name, a, t in zip("qkv", ins, (tq, tk, tv)):
        errs["d" + name] = _max_err(a.grad.data, t.grad.numpy())
    if mask_grad: errs["dmask"] = _max_err(m.grad.data, tm.grad.numpy())
    assert out.dtype == np.float64 and all(e <= tol for e in errs.values()), errs
    return errs


# ------------------------------------------------------------- sdpa vs torch --------------------------------------
@pytest.mark.parametrize("shapes", [((2, 3, 7, 8), (2, 3, 7, 8), (2, 3, 7, 8)),      # (B, H, T, d)
                                    ((7, 8), (7, 8), (7, 8)),                          # (T, d)
                                    ((2, 3, 5, 8), (2, 3, 9, 8), (2, 3, 9, 4)),        # T_q != T_k, d_v != d
                                    ((2, 2, 2, 6, 4), (2, 2, 2, 6, 4), (2, 2, 2, 6, 4))])
@pytest.mark.parametrize("is_causal", [False, True])
def test_sdpa_matches_torch(shapes, is_causal):
    _compare_sdpa(*_qkv(*shapes), is_causal=is_causal)


def test_sdpa_scale_matches_torch():
    _compare_sdpa(*_qkv((2, 5, 4), (2, 6, 4), (2, 6, 4)), scale=0.77)


def test_sdpa_boolean_mask_true_means_attend():
    q, k, v = _qkv((2, 3, 6, 8), (2, 3, 9, 8), (2, 3, 9, 8), seed=1)
    rng = np.random.default_rng(2)
    for shape in [(6, 9), (2, 1, 6, 9), (2, 3, 6, 9), (9,), (2, 1, 1, 9)]:            # broadcast shapes
        mask = rng.random(shape) > 0.3
        mask[..., 0] = True                                                          # keep every row alive here
        _compare_sdpa(q, k, v, mask=mask)
    # True = attend: a mask that only allows key 4 makes every output equal to v[..., 4, :]
    only4 = np.zeros(9, bool); only4[4] = True
    out = scaled_dot_product_attention(*(Tensor(a, dtype=np.float64) for a in (q, k, v)), mask=only4)
    assert _max_err(out.data, np.broadcast_to(v[..., 4:5, :], out.shape)) < 1e-15


def test_sdpa_float_mask_is_added_and_gets_a_gradient():
    q, k, v = _qkv((2, 3, 6, 8), (2, 3, 7, 8), (2, 3, 7, 8), seed=3)
    rng = np.random.default_rng(4)
    _compare_sdpa(q, k, v, mask=rng.standard_normal((6, 7)))
    _compare_sdpa(q, k, v, mask=rng.standard_normal((2, 1, 6, 7)), mask_grad=True)    # e.g. ALiBi / learned bias
    ninf = np.where(rng.random((6, 7)) > 0.5, -np.inf, 0.0); ninf[:, 2] = 0.0
    _compare_sdpa(q, k, v, mask=ninf)


def test_sdpa_fully_masked_rows_output_zero_like_torch():
    q, k, v = _qkv((2, 5, 4), (2, 6, 4), (2, 6, 3), seed=5)
    mask = np.random.default_rng(6).random((2, 5, 6)) > 0.5
    mask[0, 1] = False                                                             # row 1 of batch 0: nothing to read
    mask[1, 4] = False
    _compare_sdpa(q, k, v, mask=mask)
    x = [Tensor(a, dtype=np.float64, requires_grad=True) for a in (q, k, v)]
    out = scaled_dot_product_attention(*x, mask=mask)
    out.sum().backward()
    assert np.all(out.data[0, 1] == 0.0) and np.all(out.data[1, 4] == 0.0) and np.isfinite(out.data).all()
    assert np.all(x[0].grad.data[0, 1] == 0.0) and np.isfinite(x[1].grad.data).all()
    # a float mask of -inf over a whole row behaves the same way
    fmask = np.where(mask, 0.0, -np.inf)
    fout = scaled_dot_product_attention(*x, mask=fmask).data
    assert _max_err(fout, out.data) < 1e-14 and np.all(fout[0, 1] == 0.0) and np.all(fout[1, 4] == 0.0)


@pytest.mark.parametrize("T,tk_extra", [(200, 0), (257, 0), (130, 70)])
def test_sdpa_long_causal_matches_torch(T, tk_extra):
    q, k, v = _qkv((1, 2, T, 16), (1, 2, T + tk_extra, 16), (1, 2, T + tk_extra, 16), seed=T)
    _compare_sdpa(q, k, v, is_causal=True)
    mask = np.random.default_rng(1).random((T, T + tk_extra)) > 0.2                # causal and a mask combined
    mask[:, 0] = True
    tmask = np.tril(np.ones((T, T + tk_extra), bool)) & mask                      # torch: combine by hand
    ins = [Tensor(a, dtype=np.float64) for a in (q, k, v)]
    ours = scaled_dot_product_attention(*ins, mask=mask, is_causal=True).data
    theirs = F.scaled_dot_product_attention(*(torch.tensor(a) for a in (q, k, v)), attn_mask=torch.tensor(tmask))
    assert _max_err(ours, theirs.numpy()) < TOL


def test_sdpa_dropout_matches_torch_with_the_same_mask():
    q, k, v = _qkv((2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 3), seed=7)
    p = 0.4
    manual_seed(11)
    x = [Tensor(a, dtype=np.float64, requires_grad=True) for a in (q, k, v)]
    out = scaled_dot_product_attention(*x, dropout_p=p, is_causal=True)
    manual_seed(11)
    keep = get_rng().random((2, 2, 5, 6), dtype=np.float32) >= p                  # the draw the op makes
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    s = (tq @ tk.transpose(-1, -2)) / 2.0 + torch.tensor(np.where(np.tril(np.ones((5, 6), bool)), 0.0, -np.inf))
    ref = (torch.softmax(s, -1) * torch.tensor(keep) / (1 - p)) @ tv
    g = np.random.default_rng(8).standard_normal(ref.shape)
    out.backward(g); ref.backward(torch.tensor(g))
    assert _max_err(out.data, ref.detach().numpy()) < TOL
    for a, t in zip(x, (tq, tk, tv)):
        assert _max_err(a.grad.data, t.grad.numpy()) < TOL


def test_sdpa_gradcheck_with_leading_dims():
    q, k, v = (Tensor(a, dtype=np.float64) for a in _qkv((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 2), seed=9))
    mask = np.random.default_rng(10).random((3, 5)) > 0.3
    assert gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True), [q, k, v])


def test_sdpa_float32_stays_float32():
    q, k, v = (Tensor(a, requires_grad=True) for a in _qkv((2, 4, 8, 16), (2, 4, 8, 16), (2, 4, 8, 16)))
    out = scaled_dot_product_attention(q, k, v, is_causal=True, mask=np.zeros((8, 8), np.float64))
    out.sum().backward()
    assert out.dtype == np.float32 and {t.grad.dtype for t in (q, k, v)} == {np.dtype(np.float32)}
    ref = F.scaled_dot_product_attention(*(torch.tensor(t.data) for t in (q, k, v)), is_causal=True)
    assert _max_err(out.data, ref.numpy()) < 1e-5


def test_sdpa_errors():
    a = Tensor(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: q, k, v must have the same leading dimensions"):
        scaled_dot_product_attention(a, Tensor(np.ones((1, 3, 4))), Tensor(np.ones((1, 3, 4))))
    with pytest.raises(ValueError, match=r"q and k must have the same last dimension d; got q \(2, 3, 4\), k \(2, 3, 3\)"):
        scaled_dot_product_attention(a, Tensor(np.ones((2, 3, 3))), a)
    with pytest.raises(ValueError, match=r"k and v must have the same number of positions T_k; got k \(2, 3, 4\), v \(2, 5, 4\)"):
        scaled_dot_product_attention(a, a, Tensor(np.ones((2, 5, 4))))
    with pytest.raises(ValueError, match=r"mask of shape \(3, 5\) does not broadcast to the attention scores' shape \(2, 3, 3\)"):
        scaled_dot_product_attention(a, a, a, mask=np.ones((3, 5), bool))
    with pytest.raises(TypeError, match="mask must be boolean"):
        scaled_dot_product_attention(a, a, a, mask=np.ones((3, 3), np.int32))
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\], got 1.5"):
        scaled_dot_product_attention(a, a, a, dropout_p=1.5)


# ------------------------------------------------------------- MultiHeadAttention vs torch ------------------------
def _torch_rope(x, positions, theta=10000.0):
    d = x.shape[-1]
    angles = positions.to(torch.float64)[..., None] * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    cos, sin = torch.cos(angles), torch.sin(angles)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


def _torch_mha(params, x, num_heads, causal=True, rope_positions=None, mask=None):
    """Reference built from the same weights with torch.nn.functional.linear + scaled_dot_product_attention."""
    B, T, C = x.shape
    hd = C // num_heads
    qkv = F.linear(x, params["qkv_proj.weight"], params.get("qkv_proj.bias"))
    q, k, v = (t.reshape(B, T, num_heads, hd).transpose(1, 2) for t in qkv.split(C, dim=-1))
    if rope_positions is not None:
        q, k = _torch_rope(q, rope_positions), _torch_rope(k, rope_positions)
    if mask is not None and causal:
        mask = mask & torch.ones(T, T, dtype=torch.bool).tril()
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
    return F.linear(y.transpose(1, 2).reshape(B, T, C), params["out_proj.weight"], params.get("out_proj.bias"))


@pytest.mark.parametrize("bias,use_rope,causal", [(True, False, True), (False, False, True), (True, True, True),
                                                  (True, False, False)])
def test_mha_matches_torch_values_and_all_parameter_grads(bias, use_rope, causal):
    manual_seed(0)
    B, T, C, H = 2, 9, 24, 4
    rope = RotaryEmbedding(C // H, max_seq_len=32) if use_rope else None
    mha = MultiHeadAttention(C, H, bias=bias, causal=causal, rope=rope).double()
    assert [n for n, _ in mha.named_parameters()] == (["qkv_proj.weight", "qkv_proj.bias", "out_proj.weight", "out_proj.bias"]
                                                      if bias else ["qkv_proj.weight", "out_proj.weight"])
    x = np.random.default_rng(1).standard_normal((B, T, C))
    g = np.random.default_rng(2).standard_normal((B, T, C))
    params = {n: torch.tensor(p.data, requires_grad=True) for n, p in mha.named_parameters()}
    xt = torch.tensor(x, requires_grad=True)
    ref = _torch_mha(params, xt, H, causal, torch.arange(T) if use_rope else None)
    ref.backward(torch.tensor(g))
    xx = Tensor(x, dtype=np.float64, requires_grad=True)
    out = mha(xx)
    out.backward(g)
    assert _max_err(out.data, ref.detach().numpy()) < TOL
    assert _max_err(xx.grad.data, xt.grad.numpy()) < TOL
    for name, p in mha.named_parameters():
        assert _max_err(p.grad.data, params[name].grad.numpy()) < TOL, name
    # the gradient reaches the query and key projections (rows 0:C and C:2C of qkv_proj.weight)
    gw = mha.qkv_proj.weight.grad.data
    for part in (slice(0, C), slice(C, 2 * C)):
        assert np.abs(gw[part]).min() > 0 and np.abs(gw[part]).max() > 1e-3


def test_mha_with_mask_and_per_batch_positions_matches_torch():
    manual_seed(3)
    B, T, C, H = 2, 6, 16, 2
    mha = MultiHeadAttention(C, H, rope=RotaryEmbedding(8, max_seq_len=40)).double()
    x = np.random.default_rng(4).standard_normal((B, T, C))
    pos = np.array([[0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15]])
    pad = np.ones((B, 1, 1, T), bool); pad[1, ..., :2] = False                     # batch 1: first two keys are padding
    params = {n: torch.tensor(p.data, requires_grad=True) for n, p in mha.named_parameters()}
    ref = _torch_mha(params, torch.tensor(x), H, True, torch.tensor(pos)[:, None], torch.tensor(pad))
    ours = mha(Tensor(x, dtype=np.float64), token_positions=pos, mask=pad)
    assert _max_err(ours.data, ref.detach().numpy()) < TOL            # rows that see only padding output out_proj.bias
    g = np.random.default_rng(5).standard_normal(ours.shape)
    ours.backward(g); ref.backward(torch.tensor(g))
    for name, p in mha.named_parameters():
        assert _max_err(p.grad.data, params[name].grad.numpy()) < TOL, name


def test_mha_long_sequence_block_path_matches_torch():
    manual_seed(4)
    B, T, C, H = 1, 200, 32, 2
    mha = MultiHeadAttention(C, H, rope=RotaryEmbedding(16, max_seq_len=256)).double()
    x = np.random.default_rng(6).standard_normal((B, T, C))
    params = {n: torch.tensor(p.data, requires_grad=True) for n, p in mha.named_parameters()}
    ref = _torch_mha(params, torch.tensor(x), H, True, torch.arange(T))
    out = mha(Tensor(x, dtype=np.float64))
    g = np.random.default_rng(7).standard_normal(out.shape)
    out.backward(g); ref.backward(torch.tensor(g))
    assert _max_err(out.data, ref.detach().numpy()) < TOL
    for name, p in mha.named_parameters():
        assert _max_err(p.grad.data, params[name].grad.numpy()) < TOL, name


def test_mha_float32_stays_float32():
    manual_seed(5)
    mha = MultiHeadAttention(16, 4, rope=RotaryEmbedding(4))
    x = Tensor(np.random.default_rng(8).standard_normal((2, 5, 16)), requires_grad=True)
    y = mha(x)
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in mha.parameters())


@pytest.mark.parametrize("use_rope", [False, True])
def test_mha_causality_future_tokens_never_change_the_past(use_rope):
    manual_seed(6)
    T = 8
    mha = MultiHeadAttention(12, 3, rope=RotaryEmbedding(4, max_seq_len=T) if use_rope else None).double()
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, T, 12))
    base = mha(Tensor(x, dtype=np.float64)).data
    for t in range(T):
        x2 = x.copy()
        x2[:, t:] = rng.standard_normal(x2[:, t:].shape)
        y2 = mha(Tensor(x2, dtype=np.float64)).data
        assert _max_err(y2[:, :t], base[:, :t]) == 0.0 if t else True
        assert _max_err(y2[:, t], base[:, t]) > 1e-6
    # and the gradient of an early output with respect to later inputs is exactly zero
    xx = Tensor(x, dtype=np.float64, requires_grad=True)
    (gx,) = grad(mha(xx)[:, 3].sum(), [xx])
    assert np.all(gx.data[:, 4:] == 0.0) and np.all(np.abs(gx.data[:, :4]).sum(-1) > 0)


def test_mha_dropout_train_and_eval():
    manual_seed(7)
    mha = MultiHeadAttention(8, 2, dropout=0.5)
    x = Tensor(np.random.default_rng(10).standard_normal((2, 5, 8)))
    manual_seed(1); a = mha(x).data
    manual_seed(1); b = mha(x).data
    assert np.array_equal(a, b)
    mha.eval()
    c = mha(x).data
    assert not np.allclose(a, c) and np.array_equal(c, mha(x).data)


# ------------------------------------------------------------- KV cache -------------------------------------------
@pytest.mark.parametrize("use_rope,causal", [(False, True), (True, True), (True, False)])
def test_kv_cache_incremental_decoding_equals_full_forward(use_rope, causal):
    manual_seed(8)
    B, T, C, H = 2, 12, 16, 4
    mha = MultiHeadAttention(C, H, causal=causal, rope=RotaryEmbedding(4, max_seq_len=32) if use_rope else None).double()
    x = Tensor(np.random.default_rng(11).standard_normal((B, T, C)), dtype=np.float64)
    cache = KVCache(B, H, 32, C // H, dtype=np.float64)
    if causal:
        full = mha(x).data
        chunks = [(0, 5), (5, 6), (6, 9)] + [(i, i + 1) for i in range(9, T)]          # prompt, single tokens, a chunk
        outs = [mha(x[:, a:b], kv_cache=cache) for a, b in chunks]
        assert cache.length == T and all(o._node is None for o in outs)
        assert _max_err(np.concatenate([o.data for o in outs], axis=1), full) < 1e-13
        cache.reset()                                                                 # reuse for a new sequence
        assert _max_err(mha(x[:, :4], kv_cache=cache).data, full[:, :4]) < 1e-13
    else:                                                 # non-causal: the last chunk sees everything before it
        mha(x[:, :7], kv_cache=cache)
        last = mha(x[:, 7:], kv_cache=cache).data
        assert _max_err(last, mha(x).data[:, 7:]) < 1e-13


def test_kv_cache_float32_generation_and_overflow():
    manual_seed(9)
    mha = MultiHeadAttention(16, 2)
    x = Tensor(np.random.default_rng(12).standard_normal((1, 6, 16)))
    cache = KVCache(1, 2, 6, 8)
    with no_grad():
        steps = [mha(x[:, i:i + 1], kv_cache=cache) for i in range(6)]
    assert steps[0].dtype == np.float32 and cache.keys.dtype == np.float32
    assert _max_err(np.concatenate([s.data for s in steps], 1), mha(x).data) < 1e-5
    with pytest.raises(ValueError, match="KVCache overflow: it holds 6 of max_seq_len 6 positions and cannot append 1 more"):
        mha(x[:, :1], kv_cache=cache)
    with pytest.raises(TypeError, match="KVCache holds float32 but got keys of dtype float64"):
        mha.double()(Tensor(np.ones((1, 1, 16)), dtype=np.float64), kv_cache=KVCache(1, 2, 4, 8))


def test_fused_op_refuses_a_cache_while_recording():
    qkv = Tensor(np.ones((1, 2, 12)), requires_grad=True)
    with pytest.raises(RuntimeError, match="attention with a KV cache is for inference; call it under no_grad"):
        fused_qkv_attention(qkv, 2, kv_cache=KVCache(1, 2, 4, 2))


def test_mha_errors():
    with pytest.raises(ValueError, match="MultiHeadAttention: embed_dim 30 is not divisible by num_heads 4"):
        MultiHeadAttention(30, 4)
    with pytest.raises(TypeError, match="rope must be a RotaryEmbedding or None, got int"):
        MultiHeadAttention(8, 2, rope=3)
    mha = MultiHeadAttention(8, 2)
    for bad in [(8,), (2, 3, 4, 8), (2, 3, 7)]:
        with pytest.raises(ValueError, match=r"expected input of shape \(batch, seq_len, 8\), got"):
            mha(Tensor(np.ones(bad)))
    with pytest.raises(ValueError, match=r"mask of shape \(3, 3\) does not broadcast to the attention scores' shape \(1, 2, 4, 4\)"):
        mha(Tensor(np.ones((1, 4, 8))), mask=np.ones((3, 3), bool))
