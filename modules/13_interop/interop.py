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
# # 13 Interop
# > Hugging Face GPT-2 weights into a tinytorch GPT and back.
#
# A model trained here should be able to leave: to PyTorch, to Hugging Face's tools, to a
# GPU. And the released GPT-2 weights should be able to come in. Both directions are a
# renaming and a few transposes, because our `GPT` computes exactly what Hugging Face's
# `GPT2LMHeadModel` computes.

# %%
#| default_exp models.hf

# %%
#| export
from collections import OrderedDict

import numpy as np
from tinytorch.core.layers import StateDictError
from tinytorch.models.transformer import GPT, GPTConfig, to_numpy as _to_numpy

# %%
import pytest
from tinytorch.core.tensor import manual_seed

def _tiny_gpt(seed=0, **kw):
    manual_seed(seed)
    args = dict(vocab_size=11, embed_dim=8, num_layers=2, num_heads=2, max_seq_len=6)
    args.update(kw)
    return GPT(**args).double()

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


def gpt_from_hf_state_dict(hf_state_dict, num_heads=None, dtype=None, cls=GPT, **overrides):
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

