"""The LLaMA/CS336-style TransformerLM against a straightforward PyTorch reference written here
(RMSNorm, interleaved RoPE, SwiGLU, causal attention with a full score matrix): values and every
gradient in float64 and float32, arbitrary leading batch dims, the functional `transformer_lm`,
the block and the attention layer with explicit token positions, and gradchecks."""
import math

import numpy as np
import pytest

from tinytorch.core.tensor import Tensor, manual_seed
from tinytorch.core.autograd import gradcheck
from tinytorch.core.layers import StateDictError
from tinytorch.core.embeddings import RotaryEmbedding
from tinytorch.models.llama import TransformerLM, TransformerBlockLM, CausalSelfAttention, transformer_lm

torch = pytest.importorskip("torch")
F = torch.nn.functional

VOCAB, CTX, D, LAYERS, HEADS, DFF, THETA = 37, 16, 32, 2, 4, 80, 10000.0
TOL = {np.float64: 1e-9, np.float32: 1e-4}


# ---------------------------------------------------------------- reference ----
def ref_rms_norm(x, w, eps=1e-5):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def ref_rope(x, pos, theta):
    "Interleaved pairs (x[2i], x[2i+1]) rotated by pos * theta^(-2i/d); x (..., T, d), pos broadcastable to (..., T)."
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = pos.to(torch.float64)[..., None] * inv_freq
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


def ref_attention(x, wq, wk, wv, wo, heads, pos, theta):
    *lead, t, c = x.shape
    dk = c // heads
    split = lambda y: y.reshape(*lead, t, heads, dk).transpose(-2, -3)           # (..., H, T, dk)
    q, k, v = split(x @ wq.T), split(x @ wk.T), split(x @ wv.T)
    pos = pos.unsqueeze(-2)                                                        # one angle for all heads
    q, k = ref_rope(q, pos, theta), ref_rope(k, pos, theta)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dk)
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    y = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v
    return y.transpose(-2, -3).reshape(*lead, t, c) @ wo.T


def ref_swiglu(x, w1, w2, w3):
    return (F.silu(x @ w1.T) * (x @ w3.T)) @ w2.T


def ref_block(x, w, p, pos, heads=HEADS, theta=THETA):
    x = x + ref_attention(ref_rms_norm(x, w[p + "ln1.weight"]), w[p + "attn.q_proj.weight"], w[p + "attn.k_proj.weight"],
                          w[p + "attn.v_proj.weight"], w[p + "attn.output_proj.weight"], heads, pos, theta)
    return x + ref_swiglu(ref_rms_norm(x, w[p + "ln2.weight"]), w[p + "ffn.w1.weight"], w[p + "ffn.w2.weight"],
                          w[p + "ffn.w3.weight"])


def ref_lm(ids, w, layers=LAYERS, heads=HEADS, theta=THETA):
    x = w["token_embeddings.weight"][ids]
    pos = torch.arange(ids.shape[-1]).expand(ids.shape)
    for i in range(layers):
        x = ref_block(x, w, f"layers.{i}.", pos, heads, theta)
    return ref_rms_norm(x, w["ln_final.weight"]) @ w["lm_head.weight"].T


# ------------------------------------------------------------------ helpers ----
def rel_err(ours, ref):
    ours = ours.data if isinstance(ours, Tensor) else np.asarray(ours)
    ref = ref.detach().numpy()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max() / np.abs(ref).max())


def make_model(dtype, seed=0):
    manual_seed(seed)
    model = TransformerLM(VOCAB, CTX, D, LAYERS, HEADS, DFF, THETA)
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():                  # norm gains away from 1, so they matter
        if "ln" in name: p.data = (1.0 + 0.3 * rng.standard_normal(p.shape)).astype(np.float32)
    return model.to(dtype)


def torch_weights(model):
    return {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}


# -------------------------------------------------------------------- tests ----
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(3, 11), (2, 3, 9)])
def test_transformer_lm_equals_reference_values_and_gradients(dtype, shape):
    model = make_model(dtype)
    w = torch_weights(model)
    ids = np.random.default_rng(1).integers(0, VOCAB, size=shape)
    logits, ref = model(ids), ref_lm(torch.tensor(ids), w)
    assert logits.shape == shape + (VOCAB,) and logits.dtype == dtype
    assert rel_err(logits, ref) <= TOL[dtype]
    cot = np.random.default_rng(2).standard_normal(ref.shape).astype(dtype)
    logits.backward(cot)
    ref.backward(torch.tensor(cot))
    errs = {n: rel_err(p.grad, w[n].grad) for n, p in model.named_parameters()}
    assert len(errs) == 3 + 9 * LAYERS and max(errs.values()) <= TOL[dtype], max(errs.items(), key=lambda kv: kv[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_functional_transformer_lm_equals_reference(dtype):
    model = make_model(dtype, seed=3)
    w = torch_weights(model)
    ids = np.random.default_rng(4).integers(0, VOCAB, size=(2, 3, 10))
    ref = ref_lm(torch.tensor(ids), w)
    weights = {k: Tensor(v, dtype=v.dtype, requires_grad=True) for k, v in model.state_dict().items()}
    out = transformer_lm(VOCAB, CTX, D, LAYERS, HEADS, DFF, THETA, weights, ids)
    assert out.shape == (2, 3, 10, VOCAB) and rel_err(out, ref) <= TOL[dtype]
    (out * out).sum().backward()                                    # gradients reach the given tensors
    (ref * ref).sum().backward()
    assert max(rel_err(weights[k].grad, w[k].grad) for k in weights) <= TOL[dtype]
    as_torch = {k: v.detach() for k, v in w.items()}                # CPU torch tensors are accepted as they are
    out2 = transformer_lm(VOCAB, CTX, D, LAYERS, HEADS, DFF, THETA, as_torch, torch.tensor(ids).numpy())
    assert rel_err(out2, ref) <= TOL[dtype]


def test_functional_errors_name_keys_and_shapes():
    sd = make_model(np.float64).state_dict()
    sd["layers.1.ffn.w2.weight"] = np.zeros((3, 3))
    del sd["ln_final.weight"]
    with pytest.raises(StateDictError, match=r"missing keys: ln_final.weight \| shape mismatches: "
                                             r"layers.1.ffn.w2.weight expected \(32, 80\), got \(3, 3\)"):
        transformer_lm(VOCAB, CTX, D, LAYERS, HEADS, DFF, THETA, sd, np.zeros((1, 4), dtype=np.int64))


def test_block_and_attention_with_token_positions():
    manual_seed(5)
    block = TransformerBlockLM(D, HEADS, DFF, CTX, THETA).double()
    for name, p in block.named_parameters():
        if "ln" in name: p.data = 1.0 + 0.3 * np.random.default_rng(len(name)).standard_normal(p.shape)
    w = torch_weights(block)
    x_np = np.random.default_rng(6).standard_normal((2, 3, 7, D))
    pos_np = np.random.default_rng(7).integers(0, CTX, size=(2, 3, 7))          # arbitrary positions per sequence
    x, tx = Tensor(x_np, dtype=np.float64, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    y, ty = block(x, token_positions=pos_np), ref_block(tx, w, "", torch.tensor(pos_np))
    assert y.shape == (2, 3, 7, D) and rel_err(y, ty) <= 1e-10
    cot = np.random.default_rng(8).standard_normal(y.shape)
    y.backward(cot)
    ty.backward(torch.tensor(cot))
    assert rel_err(x.grad, tx.grad) <= 1e-10
    assert max(rel_err(p.grad, w[n].grad) for n, p in block.named_parameters()) <= 1e-10
    attn = block.attn                                               # the attention layer alone, positions (T,)
    pos1 = np.arange(3, 10)
    ref = ref_attention(tx, w["attn.q_proj.weight"], w["attn.k_proj.weight"], w["attn.v_proj.weight"],
                        w["attn.output_proj.weight"], HEADS, torch.tensor(pos1), THETA)
    assert rel_err(attn(x, token_positions=pos1), ref) <= 1e-10


def test_gradcheck_attention_and_block_small():
    manual_seed(6)
    attn = CausalSelfAttention(4, 2, RotaryEmbedding(2, 10000.0, 8)).double()
    block = TransformerBlockLM(4, 2, 6, 8, 10000.0).double()
    x = Tensor(np.random.default_rng(9).standard_normal((2, 3, 4)), dtype=np.float64)
    pos = np.array([[0, 1, 2], [5, 2, 7]])
    assert gradcheck(lambda x: attn(x, token_positions=pos), [x])
    assert gradcheck(lambda x: block(x), [x])
    for name, p in block.named_parameters():                       # every weight through the module itself
        def f(w, name=name):
            owner, _, attr = name.rpartition(".")
            mod = dict(block.named_modules())[owner]
            saved = getattr(mod, attr)
            object.__setattr__(mod, attr, w)
            try:
                return block(x)
            finally:
                object.__setattr__(mod, attr, saved)
        assert gradcheck(f, [p]), name


def test_kv_cached_generation_equals_reference_rollout():
    model = make_model(np.float64, seed=10)
    w = {k: v.detach() for k, v in torch_weights(model).items()}
    prompt = np.random.default_rng(11).integers(0, VOCAB, size=(2, 4))
    out = model.generate(prompt, max_new_tokens=20, temperature=0)          # 24 > context 16: crops
    seq = torch.tensor(prompt)
    with torch.no_grad():
        for _ in range(20):
            nxt = ref_lm(seq[:, -CTX:], w)[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert out._node is None and np.array_equal(out.data, seq.numpy())


def test_positions_must_match_the_batch():
    model = make_model(np.float64)
    with pytest.raises(ValueError, match=r"token_positions of shape \(4,\) must end with seq_len 3"):
        model(np.zeros((2, 3), dtype=np.int64), token_positions=np.arange(4))
    with pytest.raises(ValueError, match=r"token_positions of shape \(3, 3\) do not broadcast to the batch shape \(2, 3\)"):
        model(np.zeros((2, 3), dtype=np.int64), token_positions=np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="position 16 is out of range for max_seq_len 16"):
        model(np.zeros((1, 2), dtype=np.int64), token_positions=np.array([15, 16]))
