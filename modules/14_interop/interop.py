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
# # 14 Interop
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
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import tinytorch
from tinytorch.core.layers import StateDictError
from tinytorch.models.transformer import GPT, GPTConfig, to_numpy as _to_numpy
from tinytorch.text.tokenization import CharTokenizer, GPT2Tokenizer, bytes_to_unicode

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
# `head_dim` consecutive columns, which is the layout of module 10's `qkv_proj`. Older
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
    ours, mismatched, nonzero = OrderedDict(), [], []
    for hf, name, transpose in key_map:
        arr = _to_numpy(body[hf])
        if name not in targets:                               # a bias of a GPT built with bias=False
            if np.any(arr): nonzero.append(pre + hf)
            continue
        want = targets[name].shape[::-1] if transpose else targets[name].shape
        if arr.shape != want:
            mismatched.append(f"{pre + hf} expected {want}, got {arr.shape}")
            continue
        ours[name] = arr.T if transpose else arr
    if mismatched:
        raise StateDictError("load_hf_gpt2_state_dict: shape mismatches: " + "; ".join(mismatched))
    if nonzero:
        raise StateDictError("load_hf_gpt2_state_dict: the model was built with bias=False but these biases are not "
                             "zero: " + ", ".join(nonzero))
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
        if name not in ours:                                  # bias=False: a zero bias computes the same function
            weight = ours[name.rsplit(".", 1)[0] + ".weight"].data
            out["transformer." + hf] = np.zeros(weight.shape[0] if weight.ndim == 2 else weight.shape, weight.dtype)
            continue
        arr = ours[name].data
        out["transformer." + hf] = np.ascontiguousarray(arr.T) if transpose else arr.copy()
    out["lm_head.weight"] = out["transformer.wte.weight"].copy()
    return out
    ### END SOLUTION


GPT2_RELEASED_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}    # gpt2, -medium, -large, -xl


def gpt_from_hf_state_dict(hf_state_dict, num_heads=None, dtype=None, cls=GPT, **overrides):
    "Build a GPT sized from a Hugging Face GPT-2 state dict and load it; num_heads is needed unless the width is a released GPT-2's."
    sd = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in dict(hf_state_dict).items()}
    for key in ("wte.weight", "wpe.weight", "h.0.mlp.c_fc.weight"):
        if key not in sd: raise StateDictError(f"GPT.from_hf_state_dict: missing key {key} (or transformer.{key})")
    vocab_size, embed_dim = np.shape(_to_numpy(sd["wte.weight"]))
    max_seq_len = np.shape(_to_numpy(sd["wpe.weight"]))[0]
    hidden = np.shape(_to_numpy(sd["h.0.mlp.c_fc.weight"]))[1]
    if num_heads is None:
        if int(embed_dim) not in GPT2_RELEASED_HEADS:
            raise ValueError(f"GPT.from_hf_state_dict: a state dict does not record the number of heads, and width "
                             f"{embed_dim} is not a released GPT-2 size ({', '.join(map(str, GPT2_RELEASED_HEADS))}): "
                             "pass num_heads= (config.json's n_head), or load the folder with GPT.from_pretrained")
        num_heads = GPT2_RELEASED_HEADS[int(embed_dim)]
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


# %% [markdown]
# ## Hugging Face model folders
#
# A Hugging Face model is a folder: `config.json` holds the sizes under GPT-2's own names
# (`n_embd`, `n_layer`, `n_head`, `n_positions`, `n_inner`, ...), `model.safetensors` the
# weights in the state-dict layout above, and the tokenizer files sit beside them (GPT-2's
# `vocab.json` and `merges.txt`). `save_pretrained(model, folder, tokenizer)` writes such a
# folder and `from_pretrained(folder)` reads one, with the sizes and the number of heads
# taken from `config.json`, so nothing is guessed. safetensors is a flat file of named
# arrays with a JSON header; the `safetensors` package reads and writes it straight from
# and to NumPy arrays (`pip install safetensors`; torch is not needed).
#
# Our GPT is GPT-2 exactly: `gelu_new` (tanh GELU), LayerNorm epsilon 1e-5, attention
# scaled by $1/\sqrt{d_\text{head}}$, the head tied to the token embedding. A GPT built with
# `bias=False` (nanoGPT's choice, and `tito train`'s) is saved with zero biases, which
# computes the same function. A folder whose configuration asks for something else
# (another activation, another epsilon, attention scaled by layer index) is refused with the
# field's name rather than loaded into a model that would compute something different.
#
# Two tokenizers can travel with a model: GPT-2's byte-level BPE, written as `vocab.json`
# (token string -> id, bytes shown through `bytes_to_unicode`) and `merges.txt`, the files
# Hugging Face's own `GPT2Tokenizer` reads; and a character vocabulary, written as
# `char_vocab.json` (module 08's `CharTokenizer.save` format), which Hugging Face has no
# class for but which `tokenizer_from_pretrained` reads back.
#
# `from_pretrained` also accepts a model name such as `gpt2` or `openai-community/gpt2`: it
# looks in the local Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
# `~/.cache/huggingface/hub`, folder `models--openai-community--gpt2/snapshots/<revision>`),
# and never goes to the network; the error says how to fetch the model once.
#
# Writing is atomic per folder: the files are written into a temporary folder beside the
# target, then the folder is renamed into place (or, when it already exists, each file is
# renamed over its old version, `config.json` last).

# %%
#| export
CHAR_VOCAB_FILE = "char_vocab.json"
PRETRAINED_DIR = Path(tinytorch.__file__).resolve().parent / "pretrained"    # models shipped with the package
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", CHAR_VOCAB_FILE)
GPT2_EOT = "<|endoftext|>"


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("reading and writing Hugging Face model folders needs the safetensors package: "
                          "pip install safetensors") from None
    return safetensors.numpy


def gpt2_config(model, tokenizer=None):
    "The Hugging Face GPT2Config fields (a dict for config.json) describing `model`."
    _require_hf_compatible(model)
    c = model.config
    eot = tokenizer.special_tokens.get(GPT2_EOT) if isinstance(tokenizer, GPT2Tokenizer) else None
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": c.vocab_size, "n_positions": c.max_seq_len, "n_embd": c.embed_dim,
            "n_layer": c.num_layers, "n_head": c.num_heads, "n_inner": c.hidden_dim,
            "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "resid_pdrop": c.dropout_prob, "embd_pdrop": c.dropout_prob, "attn_pdrop": c.dropout_prob,
            "initializer_range": 0.02, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "tie_word_embeddings": True, "use_cache": True,
            "bos_token_id": eot, "eos_token_id": eot,
            "torch_dtype": np.dtype(model.token_embedding.weight.dtype).name}


def gpt_config_from_hf(config):
    "GPTConfig keyword arguments from a GPT-2 config.json dict; ValueError naming any field GPT cannot honour."
    if config.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"config.json describes a {config.get('model_type')!r} model; tinytorch's GPT loads GPT-2 (model_type 'gpt2')")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if k not in config]
    if missing: raise ValueError(f"config.json lacks {', '.join(missing)}")
    act = config.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"config.json: activation_function {act!r} is not GPT-2's tanh GELU ('gelu_new'), the one GPT computes")
    eps = config.get("layer_norm_epsilon", 1e-5)
    if abs(eps - 1e-5) > 1e-12:
        raise ValueError(f"config.json: layer_norm_epsilon {eps} differs from GPT's LayerNorm epsilon 1e-5")
    for flag, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                       ("add_cross_attention", False)):
        if config.get(flag, want) != want:
            raise ValueError(f"config.json: {flag}={config[flag]} is not supported (GPT computes {flag}={want})")
    if config.get("tie_word_embeddings", True) is not True:
        raise ValueError("config.json: tie_word_embeddings=false, but GPT ties the output projection to the token embedding")
    embed_dim = int(config["n_embd"])
    hidden = config.get("n_inner") or 4 * embed_dim
    return dict(vocab_size=int(config["vocab_size"]), max_seq_len=int(config["n_positions"]), embed_dim=embed_dim,
                num_layers=int(config["n_layer"]), num_heads=int(config["n_head"]), mlp_ratio=hidden / embed_dim,
                dropout_prob=float(config.get("resid_pdrop", 0.0)))


def _write_file(folder, name, data):
    (Path(folder) / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


def _tokenizer_files(tokenizer):
    "{file name: contents} of the tokenizer files for `tokenizer` (None: no files)."
    if tokenizer is None: return {}
    if isinstance(tokenizer, CharTokenizer):
        return {CHAR_VOCAB_FILE: json.dumps({"type": "CharTokenizer", "version": 1, "chars": tokenizer.itos})}
    if isinstance(tokenizer, GPT2Tokenizer):
        show = bytes_to_unicode()
        text = lambda b: "".join(show[x] for x in b)
        specials = {v: k for k, v in tokenizer.special_tokens.items()}
        vocab = {specials[i] if i in specials else text(tokenizer.vocab[i]): i for i in range(tokenizer.vocab_size)}
        merges = "#version: 0.2\n" + "".join(f"{text(a)} {text(b)}\n" for a, b in tokenizer.merges)
        config = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False, "bos_token": GPT2_EOT,
                  "eos_token": GPT2_EOT, "unk_token": GPT2_EOT, "model_max_length": 1024}
        return {"vocab.json": json.dumps(vocab, ensure_ascii=False), "merges.txt": merges,
                "tokenizer_config.json": json.dumps(config, indent=1)}
    raise TypeError(f"save_pretrained writes CharTokenizer or GPT2Tokenizer files, not {type(tokenizer).__name__}")


def save_pretrained(model, directory, tokenizer=None):
    "Write `model` (and its tokenizer) as a Hugging Face folder: config.json, model.safetensors, tokenizer files."
    st = _safetensors()
    config = gpt2_config(model, tokenizer)
    tok_files = _tokenizer_files(tokenizer)
    hf = to_hf_gpt2_state_dict(model)
    del hf["lm_head.weight"]                      # tied to transformer.wte.weight, as Hugging Face saves it
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        st.save_file({k: np.ascontiguousarray(v) for k, v in hf.items()}, stage / "model.safetensors",
                     metadata={"format": "pt"})
        for name, data in tok_files.items(): _write_file(stage, name, data)
        _write_file(stage, "config.json", json.dumps(config, indent=2) + "\n")
        umask = os.umask(0); os.umask(umask)
        for f in stage.iterdir(): os.chmod(f, 0o666 & ~umask)
        if not directory.exists():
            os.chmod(stage, 0o777 & ~umask)
            os.rename(stage, directory)
            return directory
        if not directory.is_dir(): raise NotADirectoryError(f"{directory} exists and is not a folder")
        for name in TOKENIZER_FILES:              # a tokenizer of another kind must not be left behind
            if name not in tok_files and (directory / name).exists(): (directory / name).unlink()
        for name in [*tok_files, "model.safetensors", "config.json"]:
            os.replace(stage / name, directory / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return directory


def hf_cache_dir():
    "The local Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."
    if os.environ.get("HF_HUB_CACHE"): return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"): return Path(os.environ["HF_HOME"]) / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub"


def resolve_pretrained(name_or_path, cache_dir=None):
    "The folder of a model: a path to a folder, or a model name found in the local Hugging Face cache."
    path = Path(name_or_path).expanduser()
    if path.is_dir(): return path
    name = os.fspath(name_or_path)
    if path.exists(): raise FileNotFoundError(f"{name} is a file; give the model's folder (config.json, model.safetensors)")
    cache = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
    names = [name] + (["openai-community/" + name] if "/" not in name else [])
    for repo in names:
        root = cache / ("models--" + repo.replace("/", "--"))
        ref = root / "refs" / "main"
        snaps = [root / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
        snaps += sorted((root / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for snap in snaps:
            if (snap / "config.json").is_file(): return snap
    raise FileNotFoundError(
        f"{name} is neither a folder nor a model in the Hugging Face cache {cache}; tinytorch never downloads. "
        f"With internet access fetch it once: huggingface-cli download {names[-1]} config.json model.safetensors "
        "vocab.json merges.txt")


def load_safetensors_state_dict(directory):
    "The arrays of model.safetensors (or of every shard listed in model.safetensors.index.json) in `directory`."
    st, directory = _safetensors(), Path(directory)
    if (directory / "model.safetensors").is_file(): return st.load_file(directory / "model.safetensors")
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        out = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            out.update(st.load_file(directory / shard))
        return out
    others = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.h5"))
    raise FileNotFoundError(f"{directory} holds no model.safetensors" + (f" (only {', '.join(others)}, which need "
                            "torch to read; convert them with transformers' save_pretrained)" if others else ""))


def read_hf_config(directory):
    path = Path(directory) / "config.json"
    if not path.is_file(): raise FileNotFoundError(f"{directory} holds no config.json: it is not a model folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def from_pretrained(name_or_path, dtype=None, cls=GPT, cache_dir=None):
    "A GPT (eval mode) built from a Hugging Face GPT-2 folder or cached model name: sizes from config.json."
    directory = resolve_pretrained(name_or_path, cache_dir)
    model = cls.from_config(GPTConfig(**gpt_config_from_hf(read_hf_config(directory))))
    if dtype is not None: model.to(dtype)
    try:
        load_hf_gpt2_state_dict(model, load_safetensors_state_dict(directory))
    except StateDictError as e:
        raise StateDictError(f"{directory}: the weights do not fit config.json: {e}") from None
    return model.eval()


def tokenizer_from_pretrained(name_or_path, cache_dir=None):
    "The tokenizer saved in a model folder: CharTokenizer (char_vocab.json) or GPT2Tokenizer (vocab.json + merges.txt)."
    directory = resolve_pretrained(name_or_path, cache_dir)
    if (directory / CHAR_VOCAB_FILE).is_file(): return CharTokenizer.load(directory / CHAR_VOCAB_FILE)
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return GPT2Tokenizer.from_files(directory / "vocab.json", directory / "merges.txt")
    raise FileNotFoundError(f"{directory} holds no tokenizer files ({CHAR_VOCAB_FILE}, or vocab.json and merges.txt)")

# %%
def test_folder_round_trip(tmp_path):
    model = _tiny_gpt(embed_dim=12, num_heads=3, bias=False).float()
    tok = CharTokenizer(list("abcdefghijk"))
    path = save_pretrained(model, tmp_path / "m", tok)
    assert sorted(p.name for p in path.iterdir()) == ["char_vocab.json", "config.json", "model.safetensors"]
    cfg = json.loads((path / "config.json").read_text())
    assert (cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["n_positions"], cfg["n_inner"]) == (12, 3, 2, 6, 48)
    back = from_pretrained(path)
    assert back.num_heads == 3 and back.config.bias and not back.training
    ids = np.array([[1, 4, 2, 9, 0, 3]])
    assert np.array_equal(back(ids).data, model(ids).data)        # zero biases compute the bias-free model
    assert tokenizer_from_pretrained(path).itos == tok.itos
    save_pretrained(back, path)                                   # over an existing folder: no stale tokenizer left
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert not list(tmp_path.glob(".*tmp"))

def test_folder_errors(tmp_path):
    path = save_pretrained(_tiny_gpt().float(), tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    for field, value, message in (("activation_function", "gelu", "activation_function 'gelu'"),
                                  ("layer_norm_epsilon", 1e-6, "layer_norm_epsilon 1e-06"),
                                  ("n_layer", 3, "the weights do not fit config.json: .*missing keys: transformer.h.2")):
        (path / "config.json").write_text(json.dumps({**cfg, field: value}))
        with pytest.raises((ValueError, StateDictError), match=message):
            from_pretrained(path)
    with pytest.raises(FileNotFoundError, match="neither a folder nor a model in the Hugging Face cache"):
        from_pretrained("no-such-model", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="width 8 is not a released GPT-2 size"):
        gpt_from_hf_state_dict(to_hf_gpt2_state_dict(_tiny_gpt()))

# %% [markdown]
# ## Experiments to try
#
# 1. Export a tiny GPT with `to_hf_gpt2_state_dict` and print the shapes of `attn.c_attn.weight`
#    and `qkv_proj.weight`: Hugging Face's Conv1D stores the transpose of a Linear weight.
# 2. Load a state dict with one key renamed: the error names the key, and no weight changes.
# 3. Save a model with `save_pretrained`, load it back with `GPT.from_pretrained`, and compare the
#    logits: they are equal bit for bit, because safetensors stores the arrays as they are.

# %% [markdown]
# ## Run this module's tests
#
# **How to test and complete.** The cell below runs every test of this notebook in the kernel
# and prints one line per test: PASS, FAIL with the reason (for a value out of tolerance:
# where, and by how much) or TODO for a function not written yet. From the shell,
# `tito module test 14` runs the same tests, and `tito module complete 14` tests your
# notebook, exports it into `tinytorch/` and runs the package tests (`tests/test_14_interop.py`, `tests/test_14_pretrained.py`).

# %%
from tito.notebook import run_tests

if __name__ == "__main__":
    run_tests()
