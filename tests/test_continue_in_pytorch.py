"""examples/continue_in_pytorch.py, run as the README runs it: a tinytorch run exported with `tito export-hf`
continues training under torchrun with 2 CPU processes (gloo, loopback only, a few steps). Its step-0 loss is
tinytorch's loss of the run's checkpoint on the same global batch, the loss goes down, and the folder it
writes loads into tinytorch: its validation loss is the script's last evaluation, and its logits and greedy
tokens are transformers' from the same folder."""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinytorch import checkpoints, training
from tinytorch.data import load_data
from tinytorch.models.transformer import GPT
from tinytorch.models.hf import tokenizer_from_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "continue_in_pytorch.py"
STEPS, BATCH, EVAL_ITERS, SEED, LR = 30, 16, 2, 1337, 1e-2


def _script():
    spec = importlib.util.spec_from_file_location("continue_in_pytorch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mean_loss(model, batches):
    return float(np.mean([training.language_model_loss(model, x, y).item() for x, y in batches]))


@pytest.mark.slow
def test_two_process_ddp_continuation_loads_back_into_tinytorch(tmp_path):
    from tito.main_job import export_hf_cmd
    config = training.get_preset("tiny", data="shakespeare", max_iters=5, eval_interval=5, eval_iters=1, threads=1)
    checkpoints.run(config, tmp_path / "run", log=lambda *a: None, progress="none")
    export_hf_cmd(tmp_path / "run", tmp_path / "hf", overwrite=False)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"): env["GLOO_SOCKET_IFNAME"] = "lo"       # gloo on loopback only
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_loopback_port()), str(SCRIPT),
           str(tmp_path / "hf"), "--data", str(tmp_path / "run"), "--out", str(tmp_path / "out"),
           "--max-iters", str(STEPS), "--batch-size", str(BATCH), "--lr", str(LR), "--eval-interval", str(STEPS),
           "--eval-iters", str(EVAL_ITERS), "--seed", str(SEED)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert log["world_size"] == 2 and len(log["loss"]) == STEPS and log["eval_step"] == [0, STEPS]

    # Step 0: the script's loss, averaged over the two processes' halves, is tinytorch's on the whole batch.
    script = _script()
    train, val, _ = load_data(tmp_path / "run" / "data")
    mine, _ = checkpoints.model_from_checkpoint(checkpoints.load_checkpoint(tmp_path / "run"))[:2]
    T = mine.config.max_seq_len
    x, y = script.get_batch(np.asarray(train, dtype=np.int64), 0, BATCH, T, SEED)
    ours = training.language_model_loss(mine, x, y).item()
    print(f"\nstep-0 loss: tinytorch {ours:.6f}, PyTorch DDP {log['loss'][0]:.6f}; "
          f"val loss {log['eval_val'][0]:.4f} -> {log['eval_val'][-1]:.4f}")
    assert abs(ours - log["loss"][0]) < 1e-5 * ours
    val_batches = script.eval_batches(np.asarray(val, dtype=np.int64), EVAL_ITERS, BATCH, T, SEED)
    assert abs(_mean_loss(mine, val_batches) - log["eval_val"][0]) < 1e-5 * log["eval_val"][0]

    # The loss goes down: over the steps and on the fixed validation batches.
    assert np.mean(log["loss"][-5:]) < log["loss"][0] - 0.3
    assert log["eval_val"][-1] < log["eval_val"][0] - 0.3

    # The folder loads into tinytorch as the trained model, and generates what transformers generates.
    trained = GPT.from_pretrained(tmp_path / "out")
    assert abs(_mean_loss(trained, val_batches) - log["eval_val"][-1]) < 1e-5 * log["eval_val"][-1]
    tokenizer = tokenizer_from_pretrained(tmp_path / "out")
    assert tokenizer.itos == tokenizer_from_pretrained(tmp_path / "hf").itos
    prompt = tokenizer.encode("ROMEO:")
    greedy = trained.generate(np.array(prompt), max_new_tokens=20, temperature=0.0).data[len(prompt):].tolist()
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0)
    assert greedy == theirs[0, len(prompt):].tolist()
    with torch.no_grad():
        their_logits = hf(torch.from_numpy(val_batches[0][0])).logits.numpy()
    assert np.abs(trained(val_batches[0][0]).data - their_logits).max() < 1e-4 * np.abs(their_logits).max()
    print("greedy sample:", repr(tokenizer.decode(prompt + greedy)))
