"""Module 16 (tinytorch.training) at package level: resuming equals never stopping (bit for bit),
after Ctrl-C between steps, mid-forward or mid-update; checkpoints are atomic; NaN stops cleanly with
the last good checkpoint intact; every bad input gets a clear error."""
import os
import signal
import threading
import urllib.error

import numpy as np
import pytest

from tinytorch.core.layers import load
from tinytorch.core.tensor import get_rng, manual_seed
from tinytorch.text.tokenization import CharTokenizer
from tinytorch import data as tdata
from tinytorch.training import DataError, Trainer, TrainingDiverged, build_model, get_batch, prepare_data

from tests.training_fixtures import corpus, corpus_file, make_trainer as _trainer, tiny_config as _tiny  # noqa: F401


def _same_run(a, b):
    assert a.history == b.history                                     # every loss, lr and evaluation, bitwise
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert np.array_equal(p.data, q.data), name
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    for i in sa["state"]:
        for k in ("exp_avg", "exp_avg_sq"):
            assert np.array_equal(sa["state"][i][k], sb["state"][i][k])
    assert a.data_rng.bit_generator.state == b.data_rng.bit_generator.state


def test_resume_equals_uninterrupted(tmp_path, corpus):
    # dropout and gradient accumulation on, so both generators and the accumulation matter
    config = _tiny(dropout=0.1, grad_accum_steps=2)
    full = _trainer(corpus, tmp_path, config, "full")
    assert full.fit().status == "finished"
    full_rng = get_rng().bit_generator.state

    part = _trainer(corpus, tmp_path, config, "part")

    def stop_at_13(trainer, loss):
        if trainer.step == 13: raise KeyboardInterrupt          # Ctrl-C between steps
    part.callbacks.append(stop_at_13)
    res = part.fit()
    assert res.status == "interrupted" and res.step == 13 and len(part.history["loss"]) == 13
    get_rng().bit_generator.state = np.random.default_rng(999).bit_generator.state   # scramble the global rng

    resumed = _trainer(corpus, tmp_path, config, "part")                             # a fresh process, in effect
    resumed.load_state_dict(load(tmp_path / "part" / "ckpt.npz"))
    assert resumed.step == 13
    assert resumed.fit().status == "finished"
    _same_run(full, resumed)
    assert get_rng().bit_generator.state == full_rng
    assert [round(v, 6) for v in full.history["eval_val"]] == [round(v, 6) for v in resumed.history["eval_val"]]


@pytest.mark.parametrize("where", ["forward", "update"])
def test_ctrl_c_mid_step_saves_a_consistent_checkpoint(tmp_path, corpus, where):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach only the main thread, and these tests send SIGINT to this process")
    config = _tiny(dropout=0.1, max_iters=12, lr_decay_iters=12)
    full = _trainer(corpus, tmp_path, config, "full")
    full.fit()

    part = _trainer(corpus, tmp_path, config, "part")
    if where == "forward":             # SIGINT during the 6th step's forward pass: that step is abandoned
        original = part.forward_backward

        def forward_backward(x, y, scale=1.0):
            if part.step == 5: os.kill(os.getpid(), signal.SIGINT)
            return original(x, y, scale)
        part.forward_backward = forward_backward
        expected_step = 5
    else:                              # SIGINT while AdamW writes the weights: the update completes first
        original = part.parallel.optimizer_step

        def optimizer_step(optimizer):
            if part.step == 5: os.kill(os.getpid(), signal.SIGINT)
            return original(optimizer)
        part.parallel.optimizer_step = optimizer_step
        expected_step = 6
    res = part.fit()
    assert res.status == "interrupted" and res.step == expected_step
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler         # handler restored
    resumed = _trainer(corpus, tmp_path, config, "part")
    resumed.load_state_dict(load(tmp_path / "part" / "ckpt.npz"))
    assert resumed.step == expected_step
    resumed.fit()
    _same_run(full, resumed)


def test_checkpoint_write_is_atomic(tmp_path, corpus, monkeypatch):
    trainer = _trainer(corpus, tmp_path, _tiny(max_iters=4, lr_decay_iters=4, eval_interval=2))
    trainer.fit()
    path = tmp_path / "run" / "ckpt.npz"
    before = path.read_bytes()
    real_savez = np.savez

    def savez_dies_midway(file, *args, **kwds):
        real_savez(file, *args, **dict(list(kwds.items())[:3]))          # part of the arrays reach the disk
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(np, "savez", savez_dies_midway)
    trainer.step += 1
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert path.read_bytes() == before and load(path)["step"] == 4
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus):
    trainer = _trainer(corpus, tmp_path, _tiny(max_iters=30, eval_interval=10))

    def poison(trainer, loss):
        if trainer.step == 12: trainer.model.ln_f.weight.data[:] = np.nan
    trainer.callbacks.append(poison)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 12: loss nan \(learning rate .*\). The model "
                                               r"was not updated with it; the last good checkpoint \(step 10\) is .*ckpt.npz"):
        trainer.fit()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ckpt = load(tmp_path / "run" / "ckpt.npz")
    assert ckpt["step"] == 10 and all(np.isfinite(v).all() for v in ckpt["model"].values())


def test_splits_too_small_for_the_context(tmp_path):
    text = "abcdefghij" * 30                              # 300 characters: 270 train, 30 val
    tok = CharTokenizer.from_text(text)
    train, val, _ = prepare_data(text, tok, tmp_path)
    config = _tiny(context_length=32)
    manual_seed(0)
    with pytest.raises(DataError, match=r"the validation split has 30 tokens, too few for context_length 32 "
                                        r"\(a window needs 33\)"):
        Trainer(build_model(config, tok.vocab_size), train, val, config)


def test_tiny_shakespeare_download_cache_and_offline(tmp_path, monkeypatch):
    shared = os.path.join(os.path.dirname(__file__), "..", "tinytorch", "datasets", "tinyshakespeare.txt")
    payload = open(shared, "rb").read() if os.path.exists(shared) else None
    calls = []

    class Response:
        def __init__(self, data): self.data = data
        def read(self): return self.data
        def __enter__(self): return self
        def __exit__(self, *a): return False

    def offline(url, timeout):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(tdata.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"could not download Tiny Shakespeare .* Without network access.*--data /path/to/"):
        tdata.download_tiny_shakespeare(cache=tmp_path)
    monkeypatch.setattr(tdata.urllib.request, "urlopen", lambda url, timeout: Response(b"not shakespeare"))
    with pytest.raises(DataError, match="has SHA-256 .* expected 86c4e6aa"):
        tdata.download_tiny_shakespeare(cache=tmp_path)
    assert list(tmp_path.iterdir()) == []                    # nothing half-downloaded is kept
    if payload is None:
        pytest.skip("the shipped tinyshakespeare.txt is missing")
    monkeypatch.setattr(tdata.urllib.request, "urlopen", lambda url, timeout: Response(payload))
    path = tdata.download_tiny_shakespeare(cache=tmp_path)
    assert path.read_bytes() == payload
    monkeypatch.setattr(tdata.urllib.request, "urlopen", offline)
    assert tdata.download_tiny_shakespeare(cache=tmp_path) == path and calls == [tdata.TINY_SHAKESPEARE_URL]  # cached


def test_batches_come_from_the_memmap(tmp_path, corpus):
    tok = CharTokenizer.from_text(corpus)
    train, val, meta = prepare_data(corpus, tok, tmp_path)
    assert isinstance(train, np.memmap) and train.dtype == np.uint16 and meta["train_tokens"] == len(train)
    assert (tmp_path / "train.bin").stat().st_size == 2 * len(train)
    x, y = get_batch(train, 4, 64, np.random.default_rng(3))
    for row_x, row_y in zip(x, y):
        text = tok.decode(row_x) + tok.decode(row_y[-1:])
        assert text in corpus
