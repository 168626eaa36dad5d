"""What the package tests of training (module 16) and checkpoints (module 17) share: a small corpus
of standard-library source, a tiny configuration, and a Trainer built on it."""
import pytest

from tinytorch.core.tensor import manual_seed
from tinytorch.text.tokenization import CharTokenizer
from tinytorch.training import Trainer, TrainConfig, build_model, prepare_data, python_stdlib_corpus

CORPUS_MODULES = ("textwrap", "heapq", "bisect", "string", "fnmatch", "colorsys")


@pytest.fixture(scope="module")
def corpus():
    text = python_stdlib_corpus(CORPUS_MODULES)
    assert len(text) > 40_000
    return text


@pytest.fixture
def corpus_file(tmp_path, corpus):
    path = tmp_path / "corpus.txt"
    path.write_text(corpus)
    return path


def tiny_config(**kw):
    base = dict(context_length=16, batch_size=4, num_layers=1, num_heads=2, embed_dim=16, max_iters=30,
                lr_decay_iters=30, warmup_iters=3, eval_interval=10, eval_iters=2, log_interval=10)
    return TrainConfig(**{**base, **kw})


def make_trainer(corpus, tmp_path, config, name="run"):
    tok = CharTokenizer.from_text(corpus)
    train, val, _ = prepare_data(corpus, tok, tmp_path / name / "data")
    manual_seed(config.seed)
    model = build_model(config, tok.vocab_size)
    return Trainer(model, train, val, config, tok, tmp_path / name, log=lambda *a: None, progress="none")
