"""Module 17 (tinytorch.checkpoints) at package level: a real run lowers the loss and writes its
files, a checkpoint holds everything and rebuilds the model, bad files and changed settings or text
are refused with a clear error, and a run without matplotlib or rich says so and goes on."""
import json

import numpy as np
import pytest

from tinytorch.core.layers import CheckpointError, save
from tinytorch.training import DataError, get_batch, get_preset
from tinytorch.checkpoints import load_checkpoint, model_from_checkpoint, resume_config, run

from tests.training_fixtures import corpus, corpus_file, make_trainer as _trainer, tiny_config as _tiny  # noqa: F401


def test_short_run_lowers_the_loss(tmp_path, corpus_file):
    # 2 layers, width 32, 150 steps of 8 x 32 characters (about 2 s): the validation loss must fall from
    # ln(vocab) ~ 4.5 nats by at least 1.2 nats, to at most 3.25 (this seed gives 3.03; the corpus's
    # character frequencies alone give 3.13).
    config = get_preset("tiny", data=str(corpus_file), max_iters=150, lr_decay_iters=150, eval_interval=150,
                        eval_iters=10, learning_rate=3e-3, seed=7)
    trainer, result = run(config, tmp_path / "out", log=lambda *a: None, progress="none")
    h = trainer.history
    assert result.status == "finished" and result.step == 150 and h["eval_step"] == [0, 150]
    assert h["eval_val"][0] > 4.0
    assert h["eval_val"][-1] <= 3.25 and h["eval_val"][0] - h["eval_val"][-1] >= 1.2, h["eval_val"]
    assert np.mean(h["loss"][-20:]) < np.mean(h["loss"][:20]) - 1.0
    assert (tmp_path / "out" / "ckpt.npz").is_file() and json.loads((tmp_path / "out" / "history.json").read_text())
    assert (tmp_path / "out" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_holds_everything_and_rebuilds_the_model(tmp_path, corpus):
    trainer = _trainer(corpus, tmp_path, _tiny(max_iters=10, eval_interval=5))
    trainer.fit()
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["format"] == "tinytorch-train-v1" and ckpt["step"] == 10
    assert set(ckpt) >= {"model", "optimizer", "rng", "config", "tokenizer", "history", "data"}
    assert ckpt["rng"]["data"]["bit_generator"] == "PCG64" and ckpt["config"]["embed_dim"] == 16
    model, tok, config = model_from_checkpoint(tmp_path / "run" / "ckpt.npz")
    assert tok.itos == trainer.tokenizer.itos and config == trainer.config and not model.training
    x, _ = get_batch(trainer.val_data, 2, 16, np.random.default_rng(0))
    trainer.model.eval()
    assert np.array_equal(model(x).data, trainer.model(x).data)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "garbage.npz")
    save({"w": np.ones(2)}, tmp_path / "weights.npz")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "weights.npz")


def test_resume_refuses_other_settings_and_other_data(tmp_path, corpus_file):
    config = get_preset("tiny", data=str(corpus_file), max_iters=4, lr_decay_iters=4, warmup_iters=1, eval_interval=2)
    run(config, tmp_path / "r", log=lambda *a: None, progress="none")
    saved = load_checkpoint(tmp_path / "r")["config"]
    assert resume_config(saved, max_iters=8).max_iters == 8
    with pytest.raises(ValueError, match=r"cannot change embed_dim \(32 -> 64\)"):
        resume_config(saved, embed_dim=64)
    corpus_file.write_text(corpus_file.read_text()[::-1])
    with pytest.raises(DataError, match="is not the text the checkpoint was trained on"):
        run(None, tmp_path / "r", resume=tmp_path / "r", log=lambda *a: None, progress="none")


def test_without_matplotlib_and_rich_the_run_says_so_and_goes_on(tmp_path, corpus_file, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def import_without_extras(name, *args, **kwargs):
        if name.split(".")[0] in ("matplotlib", "rich"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", import_without_extras)
    messages = []
    config = get_preset("tiny", data=str(corpus_file), max_iters=4, lr_decay_iters=4, warmup_iters=1,
                        eval_interval=2, log_interval=2)
    _, result = run(config, tmp_path / "out", log=messages.append, progress="rich")
    assert result.status == "finished"
    assert "(rich is not installed: progress is printed as lines)" in messages
    assert any(m.startswith("step 2/4 | loss ") and m.endswith(" tok/s") for m in messages), messages
    assert any(m.startswith("matplotlib is not installed: no loss plot") for m in messages)
    assert not (tmp_path / "out" / "loss.png").exists() and (tmp_path / "out" / "history.json").is_file()
