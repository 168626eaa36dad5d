"""Module 12 building blocks against PyTorch: LayerNorm, RMSNorm, the fused GELU MLP, SwiGLU,
parameter counts against Hugging Face (built on torch's meta device, nothing allocated),
gradchecks of every module on small shapes; and the given code of module 12: GPTConfig,
GPT.generate's sampling options, the parameter and attention-memory tables."""
import numpy as np
import pytest

from tinytorch.core.tensor import Tensor, manual_seed
from tinytorch.core.autograd import gradcheck
from tinytorch.models.transformer import (LayerNorm, MLP, TransformerBlock, GPT, layer_norm, linear_gelu, GPTConfig,
                                          count_parameters, parameter_breakdown, GPT2_PRESETS, analyze_attention_memory,
                                          analyze_parameter_scaling, attention_memory_bytes)
from tinytorch.models.llama import RMSNorm, SwiGLU, rms_norm, swiglu, swiglu_hidden_dim

torch = pytest.importorskip("torch")
F = torch.nn.functional


def rel_err(ours, ref):
    ours = ours.data if isinstance(ours, Tensor) else np.asarray(ours)
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-300))


def pair(shape, seed, dtype=np.float64, scale=1.0, offset=0.0):
    "The same random array as a tinytorch leaf and a torch leaf, both requiring grad."
    a = np.random.default_rng(seed).standard_normal(shape) * scale + offset
    a = a.astype(dtype)
    return Tensor(a, dtype=dtype, requires_grad=True), torch.tensor(a, requires_grad=True)


def backward_both(ours, ref, seed=99):
    g = np.random.default_rng(seed).standard_normal(ref.shape).astype(ours.dtype)
    ours.backward(g)
    ref.backward(torch.tensor(g))


TOL = {np.float64: 1e-10, np.float32: 1e-4}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm_shape", [(16,), (3, 16)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(dtype, norm_shape, affine):
    x, tx = pair((2, 3, 16), 0, dtype, scale=3.0, offset=1.5)
    w, tw = pair(norm_shape, 1, dtype) if affine else (None, None)
    b, tb = pair(norm_shape, 2, dtype) if affine else (None, None)
    y, ty = layer_norm(x, norm_shape, w, b, eps=1e-5), F.layer_norm(tx, norm_shape, tw, tb, eps=1e-5)
    assert y.dtype == dtype and rel_err(y, ty) <= TOL[dtype]
    backward_both(y, ty)
    for ours, ref in ((x, tx), (w, tw), (b, tb)):
        if ours is not None: assert rel_err(ours.grad, ref.grad) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rms_norm_matches_torch(dtype):
    x, tx = pair((2, 5, 24), 3, dtype, scale=2.0)
    w, tw = pair((24,), 4, dtype)
    y = rms_norm(x, 24, w, eps=1e-5)
    ty = tx / torch.sqrt(tx.pow(2).mean(-1, keepdim=True) + 1e-5) * tw          # CS336's definition
    assert rel_err(y, ty) <= TOL[dtype] and rel_err(y, F.rms_norm(tx, (24,), tw, eps=1e-5)) <= TOL[dtype]
    backward_both(y, ty)
    assert rel_err(x.grad, tx.grad) <= TOL[dtype] and rel_err(w.grad, tw.grad) <= TOL[dtype]


def test_rms_norm_module_float16_upcasts_like_cs336():
    a = (np.random.default_rng(5).standard_normal((3, 32)) * 300).astype(np.float16)
    norm = RMSNorm(32)
    norm.weight.data[:] = np.linspace(0.5, 1.5, 32)
    tx = torch.tensor(a)
    ref = (tx.float() / torch.sqrt(tx.float().pow(2).mean(-1, keepdim=True) + 1e-5) * torch.tensor(norm.weight.data)).half()
    y = norm(Tensor(a, dtype=np.float16))
    assert y.dtype == np.float16 and np.all(np.isfinite(y.data))
    assert np.abs(y.data.astype(np.float32) - ref.float().numpy()).max() <= 2e-3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gelu_matches_torch(dtype, bias):
    x, tx = pair((2, 7, 12), 6, dtype, scale=2.0)
    w, tw = pair((20, 12), 7, dtype, scale=0.5)
    b, tb = pair((20,), 8, dtype) if bias else (None, None)
    y, ty = linear_gelu(x, w, b), F.gelu(F.linear(tx, tw, tb), approximate="tanh")
    assert rel_err(y, ty) <= TOL[dtype]
    backward_both(y, ty)
    for ours, ref in ((x, tx), (w, tw), (b, tb)):
        if ours is not None: assert rel_err(ours.grad, ref.grad) <= TOL[dtype]


def test_mlp_module_matches_torch_and_uses_activation_module():
    from tinytorch.core.activations import gelu
    from tinytorch.core.layers import linear
    manual_seed(0)
    mlp = MLP(16).double()
    x, tx = pair((3, 4, 16), 9)
    y = mlp(x)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in mlp.state_dict().items()}
    ty = F.linear(F.gelu(F.linear(tx, t["fc1.weight"], t["fc1.bias"]), approximate="tanh"), t["fc2.weight"], t["fc2.bias"])
    assert rel_err(y, ty) <= 1e-12
    unfused = linear(gelu(linear(x, mlp.fc1.weight, mlp.fc1.bias), approximate="tanh"), mlp.fc2.weight, mlp.fc2.bias)
    assert rel_err(y, unfused.data) <= 1e-14                                     # fused == module 04's gelu
    backward_both(y, ty)
    for name, p in mlp.named_parameters():
        assert rel_err(p.grad, t[name].grad) <= 1e-10, name
    assert rel_err(x.grad, tx.grad) <= 1e-10


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_swiglu_matches_torch(dtype):
    x, tx = pair((2, 5, 16), 10, dtype, scale=2.0)
    ws = [pair(s, 11 + i, dtype, scale=0.4) for i, s in enumerate([(48, 16), (16, 48), (48, 16)])]
    (w1, tw1), (w2, tw2), (w3, tw3) = ws
    y = swiglu(x, w1, w2, w3)
    ty = F.linear(F.silu(F.linear(tx, tw1)) * F.linear(tx, tw3), tw2)
    assert rel_err(y, ty) <= TOL[dtype]
    backward_both(y, ty)
    for ours, ref in ((x, tx), (w1, tw1), (w2, tw2), (w3, tw3)):
        assert rel_err(ours.grad, ref.grad) <= TOL[dtype]


def test_swiglu_module_default_size_and_names():
    assert swiglu_hidden_dim(1) == 64 and swiglu_hidden_dim(96) == 256 and swiglu_hidden_dim(100) == 320
    ffn = SwiGLU(96)
    assert ffn.d_ff == 256 and [n for n, _ in ffn.named_parameters()] == ["w1.weight", "w2.weight", "w3.weight"]


def call_with(module, params, *args):
    """Run `module(*args)` with its parameters temporarily replaced by `params` (so gradcheck can perturb them).

    A tied parameter (one object under several names) is replaced under every name."""
    mods = dict(module.named_modules())
    owners = {}
    for n, p in module.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append((mods[n.rpartition(".")[0]], n.rpartition(".")[2]))
    slots = [owners[id(p)] for p in module.parameters()]
    saved = [[getattr(o, a) for o, a in slot] for slot in slots]
    try:
        for slot, p in zip(slots, params):
            for o, a in slot: object.__setattr__(o, a, p)
        return module(*args)
    finally:
        for slot, old in zip(slots, saved):
            for (o, a), p in zip(slot, old): object.__setattr__(o, a, p)


def test_modules_gradcheck_small():
    manual_seed(1)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 4)), dtype=np.float64)
    for module in (LayerNorm(4), RMSNorm(4), MLP(4, 6), SwiGLU(4, 5)):
        module.double()
        params = list(module.parameters())
        for p in params:                                       # non-trivial norm weights and biases
            p.data += np.random.default_rng(p.size).standard_normal(p.shape) * 0.3
        assert gradcheck(lambda x, *ps: call_with(module, ps, x), [x, *params]), type(module).__name__


def test_transformer_block_and_gpt_gradcheck():
    manual_seed(2)
    block = TransformerBlock(4, 2).double()
    for p in block.parameters():
        p.data += np.random.default_rng(p.size).standard_normal(p.shape) * 0.3
    x = Tensor(np.random.default_rng(3).standard_normal((2, 3, 4)), dtype=np.float64)
    assert gradcheck(lambda x, *ps: call_with(block, ps, x), [x, *block.parameters()])
    model = GPT(vocab_size=7, embed_dim=4, num_layers=1, num_heads=2, max_seq_len=5).double()
    for p in model.parameters():
        p.data += np.random.default_rng(p.size).standard_normal(p.shape) * 0.3
    ids, tgt = np.array([[1, 6, 0], [2, 2, 5]]), np.array([[6, 0, 3], [2, 5, 1]])
    assert gradcheck(lambda *ps: call_with(model, ps, ids, tgt)[1], list(model.parameters()))   # the loss
    assert gradcheck(lambda *ps: call_with(model, ps, ids), list(model.parameters()))           # the logits


def test_dropout_only_in_training_mode():
    manual_seed(3)
    model = GPT(vocab_size=11, embed_dim=8, num_layers=2, num_heads=2, max_seq_len=6, dropout_prob=0.5)
    ids = np.array([[1, 2, 3, 4]])
    manual_seed(4); a = model(ids).data
    manual_seed(5); b = model(ids).data
    assert not np.allclose(a, b)                                      # training: dropout is random
    model.eval()
    assert np.array_equal(model(ids).data, model(ids).data)
    ref = GPT(vocab_size=11, embed_dim=8, num_layers=2, num_heads=2, max_seq_len=6)
    ref.load_state_dict(model.state_dict())
    assert np.array_equal(model(ids).data, ref(ids).data)             # eval with p=0.5 == no dropout


def test_layer_norm_eps_and_big_offsets():
    x, tx = pair((4, 64), 20, np.float32, scale=1e-3, offset=1e3)      # tiny variance on a large mean
    y, ty = LayerNorm(64, eps=1e-5)(x), F.layer_norm(tx, (64,), eps=1e-5)
    assert np.abs(y.data - ty.detach().numpy()).max() <= 5e-2            # float32 cancellation, as in torch


@pytest.mark.parametrize("name", GPT2_PRESETS)
def test_count_parameters_equals_hugging_face(name):
    transformers = pytest.importorskip("transformers")
    cfg = getattr(GPTConfig, name)()
    hf_cfg = transformers.GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.embed_dim,
                                     n_layer=cfg.num_layers, n_head=cfg.num_heads)
    with torch.device("meta"):                                    # shapes only: nothing is allocated
        hf = transformers.GPT2LMHeadModel(hf_cfg)
    n_hf = sum(p.numel() for p in hf.parameters())
    assert count_parameters(cfg) == n_hf == dict(gpt2_small=124_439_808, gpt2_medium=354_823_168,
                                                  gpt2_large=774_030_080, gpt2_xl=1_557_611_200)[name]
    parts = parameter_breakdown(cfg)
    assert parts["token_embedding"] == hf.transformer.wte.weight.numel()
    assert parts["position_embedding"] == hf.transformer.wpe.weight.numel()
    assert parts["attention"] == sum(p.numel() for b in hf.transformer.h for p in b.attn.parameters())
    assert parts["mlp"] == sum(p.numel() for b in hf.transformer.h for p in b.mlp.parameters())


def _tiny_gpt(seed=0, **kw):
    manual_seed(seed)
    return GPT(**{**dict(vocab_size=11, embed_dim=8, num_layers=2, num_heads=2, max_seq_len=6), **kw}).double()


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


def test_generate_sampling_is_reproducible_and_respects_top_k():
    model = _tiny_gpt(seed=4)
    a = model.generate([[1, 2]], 5, temperature=1.0, seed=7)
    assert np.array_equal(a.data, model.generate([[1, 2]], 5, temperature=1.0, seed=7).data)
    assert np.array_equal(model.generate([[1, 2]], 5, top_k=1, seed=1).data, model.generate([[1, 2]], 5, temperature=0).data)
    assert np.array_equal(model.generate([[1, 2]], 5, top_p=1e-9, seed=1).data, model.generate([[1, 2]], 5, temperature=0).data)


def test_generate_keeps_mode_and_checks_arguments():
    model = _tiny_gpt()
    model.train()
    model.generate([[1]], 2)
    assert model.training
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        model.generate([[1]], 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k must be a positive integer or None, got 0"):
        model.generate([[1]], 2, top_k=0)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0, got -1"):
        model.generate([[1]], -1)
    with pytest.raises(ValueError, match="GPT.generate: token id 11 is out of range"):
        model.generate([[11]], 1)
    with pytest.raises(ValueError, match="give either seed or rng, not both"):
        model.generate([[1]], 1, seed=0, rng=np.random.default_rng(0))


def test_scaling_and_memory_tables():
    rows = analyze_parameter_scaling(print_table=False)
    assert [r["name"] for r in rows] == list(GPT2_PRESETS) and rows[-1]["total"] == 1_557_611_200
    assert attention_memory_bytes(1, 1024, 12) == 48 * 2**20
    assert attention_memory_bytes(2, 10, 3, np.float64) == 2 * 3 * 100 * 8
    assert analyze_attention_memory((1024,), print_table=False)[0]["all_layers_MiB"] == 12 * 48.0


def test_gpt_errors():
    manual_seed(0)
    model = GPT(vocab_size=11, embed_dim=8, num_layers=2, num_heads=2, max_seq_len=6).double()
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
    with pytest.raises(ValueError, match=r"at least one sequence of at least one position; got shape \(0, 4\)"):
        model(np.zeros((0, 4), dtype=np.int64), np.zeros((0, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"targets of shape \(1, 3\) do not match tokens of shape \(1, 2\)"):
        model(np.array([[1, 2]]), targets=np.array([[1, 2, 3]]))
