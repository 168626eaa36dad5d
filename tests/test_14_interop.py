"""GPT against Hugging Face transformers' GPT2LMHeadModel, built offline from a GPT2Config (nothing is
downloaded): logits, loss and every parameter's gradient, in float64 and float32, with the weights
moved through the interop loader; the state-dict round trip in both directions; weight tying
under an optimizer step; greedy generation against Hugging Face's own `generate`."""
import numpy as np
import pytest

from tinytorch.core.tensor import Tensor, manual_seed
from tinytorch.core.layers import StateDictError
from tinytorch.models.transformer import GPT, GPTConfig, count_parameters
from tinytorch.models.hf import load_hf_gpt2_state_dict, to_hf_gpt2_state_dict, hf_gpt2_key_map

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

V, P, C, L, H = 101, 32, 48, 2, 4


def rel_err(ours, ref):
    ours = ours.data if isinstance(ours, Tensor) else np.asarray(ours)
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max() / np.abs(ref).max())


def make_hf(dtype=torch.float64, seed=0):
    "A random GPT2LMHeadModel with every weight, bias and LayerNorm parameter perturbed (so all of them matter)."
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=P, n_embd=C, n_layer=L, n_head=H,
                                  activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(cfg).to(dtype).eval()
    assert hf.config._attn_implementation == "eager"
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.add_(0.05 * torch.randn_like(p))
    assert hf.lm_head.weight is hf.transformer.wte.weight
    return hf


def make_ours(hf, dtype=np.float64):
    model = GPT(V, C, L, H, max_seq_len=P)
    if dtype == np.float64: model.double()
    return load_hf_gpt2_state_dict(model, hf.state_dict())


def tokens(batch=3, t=20, seed=1):
    return np.random.default_rng(seed).integers(0, V, size=(batch, t))


def grads_vs_hf(model, hf):
    "Max relative error of every parameter's gradient, compared in Hugging Face's layout."
    hf_params = dict(hf.named_parameters())
    ours = dict(model.named_parameters())
    worst = {}
    for hf_key, our_key, transpose in hf_gpt2_key_map(L):
        g = ours[our_key].grad.data
        worst[our_key] = rel_err(g.T if transpose else g, hf_params["transformer." + hf_key].grad)
    return worst


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
def test_logits_and_every_gradient_equal_hugging_face(dtype, tol):
    hf = make_hf(torch.float64 if dtype == np.float64 else torch.float32)
    model = make_ours(hf, dtype)
    ids = tokens()
    logits = model(ids)
    hf_logits = hf(torch.tensor(ids)).logits
    assert logits.dtype == dtype and rel_err(logits, hf_logits) <= tol
    cot = np.random.default_rng(2).standard_normal(logits.shape).astype(dtype)   # a cotangent on every logit
    logits.backward(cot)
    hf_logits.backward(torch.tensor(cot))
    worst = grads_vs_hf(model, hf)
    assert len(worst) == 4 + 12 * L and max(worst.values()) <= tol, sorted(worst.items(), key=lambda kv: -kv[1])[:3]


def hf_shifted_loss(hf, ids):
    """Hugging Face's causal-LM loss with labels=ids, and the same loss recomputed in the model's dtype.

    `labels` are shifted inside Hugging Face (position t predicts labels[t + 1]). Its loss function
    upcasts the logits with `.float()`, which for a float64 model *rounds them to float32*, so for exact
    float64 comparisons we recompute that shifted cross-entropy from the float64 logits ourselves."""
    ids_t = torch.tensor(ids)
    out = hf(ids_t, labels=ids_t)
    exact = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, V), ids_t[:, 1:].reshape(-1))
    return out.loss, exact


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
def test_loss_and_gradients_equal_hugging_face_with_labels(dtype, tol):
    hf = make_hf(torch.float64 if dtype == np.float64 else torch.float32, seed=3)
    model = make_ours(hf, dtype)
    ids = tokens(seed=4)
    hf_loss, exact = hf_shifted_loss(hf, ids)
    exact.backward()
    # tinytorch's convention: targets are the next tokens, and the last position has none (ignore_index)
    targets = np.concatenate([ids[:, 1:], np.full((ids.shape[0], 1), -100)], axis=1)
    _, loss = model(ids, targets=targets)
    assert abs(loss.item() - exact.item()) / exact.item() <= tol
    assert abs(loss.item() - hf_loss.item()) / hf_loss.item() <= 1e-6          # HF's own (float32) loss value
    loss.backward()
    assert max(grads_vs_hf(model, hf).values()) <= tol
    # equivalently (causality): feed all but the last token and predict the rest
    _, loss2 = model(ids[:, :-1], targets=ids[:, 1:])
    assert abs(loss2.item() - exact.item()) / exact.item() <= tol


def test_tied_weight_is_one_parameter_and_one_update():
    hf = make_hf()
    model = make_ours(hf)
    emb = model.token_embedding.weight
    assert model.lm_head.weight is emb and sum(p is emb for p in model.parameters()) == 1
    assert model.num_parameters() == sum(p.numel() for p in hf.parameters()) == count_parameters(model.config)
    ids = tokens(seed=5)
    _, loss = model(ids[:, :-1], targets=ids[:, 1:])
    loss.backward()
    hf_shifted_loss(hf, ids)[1].backward()
    assert rel_err(emb.grad, hf.transformer.wte.weight.grad) <= 1e-9       # embedding + head contributions summed
    before = emb.data.copy()
    lr = 0.1
    for p in model.parameters():                                       # a plain SGD step over parameters()
        p.data -= lr * p.grad.data
    with torch.no_grad():
        for p in hf.parameters(): p -= lr * p.grad
    assert model.lm_head.weight is model.token_embedding.weight
    assert np.array_equal(model.lm_head.weight.data, model.token_embedding.weight.data)
    assert np.allclose(emb.data, before - lr * emb.grad.data, rtol=0, atol=1e-15)   # updated exactly once
    assert rel_err(emb.data, hf.transformer.wte.weight) <= 1e-12


def test_state_dict_round_trip_into_hugging_face():
    hf = make_hf()
    model = make_ours(hf)
    exported = to_hf_gpt2_state_dict(model)
    assert list(exported) == list(hf.state_dict())                  # same keys, same order
    hf2 = make_hf(seed=9)
    hf2.load_state_dict({k: torch.tensor(v) for k, v in exported.items()}, strict=True)
    ids = torch.tensor(tokens(seed=6))
    assert torch.equal(hf2(ids).logits, hf(ids).logits)
    assert hf2.lm_head.weight is hf2.transformer.wte.weight


def test_loader_accepts_old_buffers_and_bare_gpt2model():
    hf = make_hf()
    sd = dict(hf.state_dict())
    for i in range(L):                                             # buffers that older checkpoints carry
        sd[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, P, P))
        sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    ids = tokens(seed=7)
    ref = hf(torch.tensor(ids)).logits
    assert rel_err(GPT.from_hf_state_dict(sd, num_heads=H, dtype=np.float64)(ids), ref) <= 1e-9
    bare = {k: v for k, v in hf.transformer.state_dict().items()}     # GPT2Model: no prefix, no lm_head
    model = load_hf_gpt2_state_dict(GPT(V, C, L, H, max_seq_len=P).double(), bare)
    assert rel_err(model(ids), ref) <= 1e-9


def test_from_hf_state_dict_infers_the_config():
    hf = make_hf()
    model = GPT.from_hf_state_dict(hf.state_dict(), num_heads=H)
    assert model.config == GPTConfig(vocab_size=V, max_seq_len=P, embed_dim=C, num_layers=L, num_heads=H)
    small = to_hf_gpt2_state_dict(GPT(vocab_size=5, embed_dim=768, num_layers=1, num_heads=12, max_seq_len=4))
    assert GPT.from_hf_state_dict(small).num_heads == 12               # a released GPT-2 width
    wide = to_hf_gpt2_state_dict(GPT(vocab_size=5, embed_dim=128, num_layers=1, num_heads=8, max_seq_len=4))
    with pytest.raises(ValueError, match="width 128 is not a released GPT-2 size .* pass num_heads="):
        GPT.from_hf_state_dict(wide)                                   # 64-wide heads would be a silent guess
    with pytest.raises(ValueError, match="width 48 is not a released GPT-2 size"):
        GPT.from_hf_state_dict(hf.state_dict())


def test_loader_errors_name_the_keys():
    hf = make_hf()
    model = GPT(V, C, L, H, max_seq_len=P)
    sd = dict(hf.state_dict())
    del sd["transformer.h.1.mlp.c_fc.bias"]
    sd["transformer.h.1.mlp.gate.weight"] = torch.zeros(3)
    with pytest.raises(StateDictError, match=r"missing keys: transformer.h.1.mlp.c_fc.bias \| "
                                             r"unexpected keys: transformer.h.1.mlp.gate.weight"):
        load_hf_gpt2_state_dict(model, sd)
    sd = dict(hf.state_dict())
    sd["transformer.h.0.attn.c_attn.weight"] = sd["transformer.h.0.attn.c_attn.weight"].T   # a Linear-layout weight
    with pytest.raises(StateDictError, match=r"transformer.h.0.attn.c_attn.weight expected \(48, 144\), got \(144, 48\)"):
        load_hf_gpt2_state_dict(model, sd)
    with pytest.raises(StateDictError, match="built with bias=False but these biases are not zero: transformer.h.0.ln_1.bias"):
        load_hf_gpt2_state_dict(GPT(V, C, L, H, max_seq_len=P, bias=False), hf.state_dict())


def test_greedy_generate_equals_hugging_face_generate():
    hf = make_hf(seed=11)
    model = make_ours(hf)
    prompt = tokens(batch=2, t=5, seed=8)
    ours = model.generate(prompt, max_new_tokens=12, temperature=0)
    theirs = hf.generate(torch.tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                         max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
    assert np.array_equal(ours.data, theirs.numpy())


@pytest.mark.slow
def test_full_size_gpt2_small_builds_with_the_right_count():
    "The real 124M-parameter model (0.5 GB of float32, about 2 s to initialise)."
    manual_seed(0)
    model = GPT.from_config(GPTConfig.gpt2_small())
    assert model.num_parameters() == 124_439_808 == count_parameters(model.config)
    assert model.lm_head.weight is model.token_embedding.weight
    assert model.token_embedding.weight.dtype == np.float32
