"""Loading a checkpoint is total: any sequence of bytes gives a model or a CheckpointError.

A seeded fuzz of `load_checkpoint` + `model_from_checkpoint` over more than 2,000 malformed files,
all derived from one real (tiny) training checkpoint: every truncation length in steps, random bit
flips, random zip archives and .npy headers that declare huge shapes, every node of the metadata
tree given every wrong type, deep nesting, and a few foreign files. Any exception other than
CheckpointError, and any allocation the file's size cannot justify, fails the test."""
import copy
import functools
import io
import json
import random
import resource
import zipfile

import numpy as np
import pytest

from tinytorch import checkpoints, training
from tinytorch.core.layers import CheckpointError
from tinytorch.core.tensor import manual_seed
from tinytorch.text.tokenization import CharTokenizer

WRONG_TYPES = (None, True, -1, 1.5, "x", [1, 2], {"a": 1, "b": 2})          # one value of every JSON type
WRONG_NODES = ({"__array__": 9999}, {"__array__": "a0"}, {"__array__": True}, {"__list__": 3}, {"__dict__": []},
               {"__dict_items__": [[{"__list__": []}, 1]]}, {"__dict_items__": [1]}, {"__tuple__": {}},
               {"__weird__": 1}, {}, 1e308, "")


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    text = "abcdefgh ij\n" * 50
    tok = CharTokenizer.from_text(text)
    cfg = training.TrainConfig(context_length=8, embed_dim=8, num_layers=1, num_heads=2, batch_size=2, max_iters=2,
                               lr_decay_iters=2, warmup_iters=0, eval_interval=1, eval_iters=1)
    manual_seed(0)
    data = np.array(tok.encode(text), dtype=np.uint16)
    trainer = training.Trainer(training.build_model(cfg, tok.vocab_size), data[:500], data[500:], cfg, tok, folder,
                               log=lambda *a: None, progress="none")
    trainer.fit()
    raw = (folder / "ckpt.npz").read_bytes()
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        members = {name: z.read(name) for name in z.namelist()}
    meta = json.loads(np.load(io.BytesIO(members["__meta__.npy"])).tobytes())
    return raw, members, meta


def _npy(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def _zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _with_meta(members, meta_text):
    return _zip({**members, "__meta__.npy": _npy(np.frombuffer(meta_text.encode(), dtype=np.uint8))})


def _paths(node, path=()):
    "Every position in a JSON tree, as a tuple of keys and indices."
    yield path
    if isinstance(node, dict):
        for k, v in node.items(): yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node): yield from _paths(v, path + (i,))


def _replaced(tree, path, value):
    tree = copy.deepcopy(tree)
    if not path: return value
    node = tree
    for key in path[:-1]: node = node[key]
    node[path[-1]] = value
    return tree


def _mutated(members, meta, path, value):
    return _with_meta(members, json.dumps({**meta, "tree": _replaced(meta["tree"], path, value)}))


def _huge_header(shape, dtype="<f4", payload=b"\0" * 64):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def malformed_files(raw, members, meta):
    rng = random.Random(1234)
    for n in range(0, len(raw), max(1, len(raw) // 200)):          # truncations
        yield raw[:n]
    for _ in range(400):                                            # bit flips, 1 to 8 of them
        b = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        yield bytes(b)
    for _ in range(100):                                            # random zips of random members
        names = rng.sample(["__meta__.npy", "a0.npy", "a1.npy", "x.npy", "a01.npy", "__meta__"], rng.randint(1, 4))
        yield _zip({n: rng.randbytes(rng.randint(0, 200)) for n in names})
    for shape in ((10 ** 12,), (200000, 200000), (-1, 3), (2 ** 62, 4), (0,), (3,)):    # huge declared shapes
        for dtype in ("<f4", "<f8", "|u1", "|O", "<U5", "<c8"):
            yield _zip({**members, "a0.npy": _huge_header(shape, dtype)})
            yield _zip({**members, "__meta__.npy": _huge_header(shape, dtype)})
    tree = meta["tree"]
    for i, path in enumerate(_paths(tree)):                         # every node given every wrong type
        for value in WRONG_TYPES + (WRONG_NODES[i % len(WRONG_NODES)],):
            yield functools.partial(_mutated, members, meta, path, value)           # built only when used
    config = meta["tree"]["__dict__"]["config"]["__dict__"]
    for key in config:                                              # absurd configurations
        for value in (200000, 10 ** 30, 0, -5, 2.5, "8", None, float("nan")):
            bad = copy.deepcopy(meta)
            bad["tree"]["__dict__"]["config"]["__dict__"][key] = value
            yield _with_meta(members, json.dumps(bad))
    for top in ([], "text", 3, None, {"format": "tinytorch-checkpoint-v1"}, {"tree": tree},
                {"format": "other", "tree": tree}):
        yield _with_meta(members, json.dumps(top))
    for depth in (50, 101, 1000, 100000):                           # deep nesting
        yield _with_meta(members, '{"format": "tinytorch-checkpoint-v1", "tree": '
                         + '{"__list__": [' * depth + "]}" * depth + "}")
        yield _with_meta(members, '{"format": "tinytorch-checkpoint-v1", "tree": ' + "[" * depth + "]" * depth + "}")
    yield _with_meta(members, "not json")
    yield _with_meta(members, "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"))
    yield b""
    yield b"hello, I am a text file\n"
    yield _npy(np.ones(4))
    yield _zip({"__meta__.npy": b"\x93NUMPY\x01\x00"})
    for _ in range(50):
        yield rng.randbytes(rng.randint(1, 500))
        yield b"PK" + rng.randbytes(rng.randint(1, 500))


@pytest.mark.parametrize("part", [0, 1])
def test_fuzzed_checkpoints_load_or_raise_checkpoint_error(tmp_path, real_checkpoint, part):
    raw, members, meta = real_checkpoint
    path = tmp_path / "ckpt.npz"
    outcomes = {"model": 0, "CheckpointError": 0}
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss          # KiB on Linux
    for i, data in enumerate(malformed_files(raw, members, meta)):
        if i % 2 != part: continue
        data = data() if callable(data) else data
        path.write_bytes(data)
        try:
            checkpoints.model_from_checkpoint(checkpoints.load_checkpoint(path))
            outcomes["model"] += 1
        except CheckpointError as e:
            assert str(e) and "\n" not in str(e), (i, str(e))
            outcomes["CheckpointError"] += 1
        except Exception as e:                   # noqa: BLE001 -- the point of the test
            pytest.fail(f"case {i}: {type(e).__name__}: {e} (first bytes {data[:40]!r})")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown < 200 * 1024, f"peak memory grew by {grown:,} KiB while loading files of {len(raw):,} bytes"
    total = sum(outcomes.values())
    assert total >= 1000, outcomes                                     # two parts: over 2,000 files in all
    assert outcomes["CheckpointError"] > 0.75 * total and outcomes["model"] > 0, outcomes
    path.write_bytes(raw)
    assert checkpoints.model_from_checkpoint(checkpoints.load_checkpoint(path))[2].embed_dim == 8   # the original loads


def test_nan_weights_and_untied_head_are_refused(tmp_path, real_checkpoint):
    raw, members, meta = real_checkpoint
    ckpt = checkpoints.load_checkpoint(_write(tmp_path / "ok.npz", raw))
    for key in ("token_embedding.weight", "lm_head.weight"):
        bad = dict(ckpt)
        bad["model"] = dict(ckpt["model"]); bad["model"][key] = ckpt["model"][key].copy()
        bad["model"][key][0, 0] = np.nan
        with pytest.raises(CheckpointError, match=rf"model\.{key.replace('.', '[.]')} holds NaN"):
            checkpoints.model_from_checkpoint(bad)
        bad["model"][key][0, 0] = 0.123
        with pytest.raises(CheckpointError, match="lm_head.weight differs from token_embedding.weight"):
            checkpoints.model_from_checkpoint(bad)
    big = dict(ckpt, config={**ckpt["config"], "embed_dim": 200000, "num_heads": 2})
    with pytest.raises(CheckpointError, match=r"declares [\d,]+ parameters, the file holds"):
        checkpoints.model_from_checkpoint(big)


def _write(path, data):
    path.write_bytes(data)
    return path
