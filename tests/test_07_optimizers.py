"""Module 07 optimizers: parity with torch.optim over whole training runs, clipping, the schedule,
checkpoint resumption, dtype and in-place behaviour (the allocation-free kernels are tested in module 19)."""
import math

import numpy as np
import pytest

import tinytorch  # noqa: F401  (loads the autograd engine)
from tinytorch.core.tensor import Tensor, manual_seed
from tinytorch.core.layers import Module, Linear, Parameter, save, load
from tinytorch.core.optimizers import (SGD, Adam, AdamW, clip_grad_norm_, CosineWarmupSchedule,
                                       weight_decay_groups)

STEPS = 100
IN, HIDDEN, OUT, BATCH = 5, 16, 3, 8


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


class MLP(Module):
    "Two Linear layers with tanh between; an optional extra parameter `s` enters the loss only on even steps."
    def __init__(self, seed=0, extra=False):
        super().__init__()
        manual_seed(seed)
        self.fc1 = Linear(IN, HIDDEN)
        self.fc2 = Linear(HIDDEN, OUT)
        if extra: self.s = Parameter(np.linspace(-1.0, 1.0, OUT))

    def forward(self, x):
        return self.fc2(self.fc1(x).tanh())


def _data(dtype):
    rng = np.random.default_rng(1234)
    return (rng.standard_normal((STEPS, BATCH, IN)).astype(dtype),
            rng.standard_normal((STEPS, BATCH, OUT)).astype(dtype))


def _loss(model, x, y, step):
    d = model(Tensor(x, dtype=x.dtype)) - Tensor(y, dtype=y.dtype)
    loss = (d * d).mean()
    if hasattr(model, "s") and step % 2 == 0:
        loss = loss + (model.s * model.s).sum() * 0.1
    return loss


def _torch_mirror(torch, model):
    "The same network in PyTorch, with the same initial values, in the model's dtype."
    dtype = {np.float64: torch.float64, np.float32: torch.float32}[model.fc1.weight.dtype.type]
    named = {name: torch.nn.Parameter(torch.tensor(p.data.copy(), dtype=dtype)) for name, p in model.named_parameters()}

    def loss(x, y, step):
        hidden = torch.tanh(torch.from_numpy(x) @ named["fc1.weight"].T + named["fc1.bias"])
        value = ((hidden @ named["fc2.weight"].T + named["fc2.bias"] - torch.from_numpy(y)) ** 2).mean()
        if "s" in named and step % 2 == 0:
            value = value + (named["s"] ** 2).sum() * 0.1
        return value
    return list(named.values()), loss


def _groups(params, grouped):
    "One group, or nanoGPT's two: matrices with weight decay 0.1, vectors without."
    if not grouped: return list(params)
    params = list(params)
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def _run_pair(torch, kind, options, grouped=False, schedule=None, extra=False, dtype=np.float64):
    "Train the MLP with tinytorch and PyTorch side by side; return the largest parameter difference seen."
    model = MLP(extra=extra)
    if dtype == np.float64: model.double()
    tparams, tloss = _torch_mirror(torch, model)
    ours = list(model.parameters())
    ours_cls = {"sgd": SGD, "adam": Adam, "adamw": AdamW}[kind]
    torch_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    opt = ours_cls(_groups(ours, grouped), **options)
    topt = torch_cls(_groups(tparams, grouped), **options)
    X, Y = _data(dtype)
    worst = 0.0
    for step in range(STEPS):
        if schedule is not None:
            lr = schedule.apply(opt, step)
            for g in topt.param_groups: g["lr"] = lr
        loss = _loss(model, X[step], Y[step], step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tl = tloss(X[step], Y[step], step)
        topt.zero_grad()
        tl.backward()
        topt.step()
        assert all(np.isfinite(p.data).all() for p in ours), f"diverged at step {step}"
        worst = max(worst, max(float(np.abs(p.data - q.detach().numpy()).max()) for p, q in zip(ours, tparams)))
    state_worst = 0.0
    for p, q in zip(ours, tparams):
        ts = topt.state.get(q, {})
        assert (p in opt.state) == bool(ts)
        for k, v in ts.items():
            if k == "step":
                assert opt.state[p]["step"] == int(v.item())
            else:
                state_worst = max(state_worst, float(np.abs(opt.state[p][k] - v.numpy()).max()))
    return worst, state_worst


SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "dampening": dict(lr=0.1, momentum=0.9, dampening=0.3),
    "weight_decay": dict(lr=0.1, weight_decay=0.05),
    "all": dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
}


@pytest.mark.parametrize("case", sorted(SGD_CASES))
def test_sgd_matches_torch(torch, case):
    worst, state_worst = _run_pair(torch, "sgd", SGD_CASES[case])
    assert worst < 1e-10 and state_worst < 1e-10, (worst, state_worst)


ADAM_CASES = {
    "default": ("adam", dict(lr=0.01), False),
    "weight_decay": ("adam", dict(lr=0.01, weight_decay=0.1), False),
    "betas_eps": ("adam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01), False),
    "adamw_default": ("adamw", dict(lr=0.01), False),
    "adamw_groups": ("adamw", dict(lr=0.01, betas=(0.9, 0.95)), True),
}


@pytest.mark.parametrize("case", sorted(ADAM_CASES))
def test_adam_matches_torch(torch, case):
    kind, options, grouped = ADAM_CASES[case]
    worst, state_worst = _run_pair(torch, kind, options, grouped)
    assert worst < 1e-10 and state_worst < 1e-10, (worst, state_worst)


def test_adamw_groups_with_schedule_matches_torch(torch):
    schedule = CosineWarmupSchedule(max_lr=0.02, min_lr=0.002, warmup_iters=10, decay_iters=80)   # reaches the floor
    worst, state_worst = _run_pair(torch, "adamw", dict(lr=0.0, betas=(0.9, 0.95)), grouped=True, schedule=schedule)
    assert worst < 1e-10 and state_worst < 1e-10, (worst, state_worst)


@pytest.mark.parametrize("kind,options", [("adamw", dict(lr=0.01)), ("adam", dict(lr=0.01, weight_decay=0.1)),
                                          ("sgd", dict(lr=0.1, momentum=0.9))])
def test_parameters_without_grad_are_skipped_like_torch(torch, kind, options):
    "`s` gets a gradient only on even steps, so its step counter runs at half speed."
    worst, state_worst = _run_pair(torch, kind, options, extra=True)
    assert worst < 1e-10 and state_worst < 1e-10, (worst, state_worst)


def test_float32_run_stays_close_to_torch(torch):
    worst, _ = _run_pair(torch, "adamw", dict(lr=0.01), grouped=True, dtype=np.float32)
    assert worst < 1e-4, worst


# -------------------------------------------------------------------------------- clipping ----
def _grad_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = [Parameter(rng.standard_normal(s), dtype=dtype) for s in [(3, 4), (5,), (2, 2, 2), (1,)]]
    for p in params[:3]:
        p.grad = Tensor(rng.standard_normal(p.shape) * 2, dtype=dtype)
    return params                                    # the last one has no gradient


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("scale", [0.05, 1.5, 100.0])
def test_clip_grad_norm_matches_torch(torch, norm_type, scale):
    "max_norm far below, just above and far above the total norm: clipped, untouched, untouched."
    ours = _grad_params(np.float64)
    flat = np.concatenate([p.grad.data.ravel() for p in ours if p.grad is not None])
    max_norm = scale * np.linalg.norm(flat, ord=norm_type)
    theirs = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in ours]
    for p, q in zip(ours, theirs):
        if p.grad is not None: q.grad = torch.from_numpy(p.grad.data.copy())
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert abs(total.item() - ttotal.item()) <= 1e-12 * ttotal.item()
    assert (total.item() > max_norm) == (scale < 1)
    for p, q in zip(ours, theirs):
        if p.grad is None:
            assert q.grad is None
        else:
            assert np.abs(p.grad.data - q.grad.numpy()).max() <= 1e-14


def test_clip_grad_norm_float32_matches_torch(torch):
    ours = _grad_params(np.float32)
    theirs = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in ours[:3]]
    for p, q in zip(ours, theirs): q.grad = torch.from_numpy(p.grad.data.copy())
    total = clip_grad_norm_(ours, 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert total.dtype == np.float32 and abs(total.item() - ttotal.item()) <= 1e-6 * ttotal.item()
    for p, q in zip(ours, theirs):
        assert p.grad.dtype == np.float32 and np.allclose(p.grad.data, q.grad.numpy(), rtol=1e-6, atol=0)


def test_clip_grad_norm_single_tensor_and_result_norm():
    p = Parameter(np.zeros((10, 10)), dtype=np.float64)
    p.grad = Tensor(np.full((10, 10), 3.0), dtype=np.float64)     # norm 30
    assert clip_grad_norm_(p, 2.0).item() == 30.0
    assert abs(np.linalg.norm(p.grad.data) - 2.0) < 1e-6


# -------------------------------------------------------------------------------- schedule ----
def nanogpt_get_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    "nanoGPT's train.py get_lr, written out independently of the module."
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


@pytest.mark.parametrize("config", [(1e-3, 1e-4, 100, 2000), (6e-4, 6e-5, 20, 500), (1.0, 0.0, 0, 10), (0.5, 0.5, 3, 4)])
def test_schedule_equals_nanogpt_at_every_step(config):
    max_lr, min_lr, warmup, decay = config
    schedule = CosineWarmupSchedule(max_lr, min_lr, warmup, decay)
    lrs = [schedule(step) for step in range(decay + 50)]
    expected = [nanogpt_get_lr(step, max_lr, min_lr, warmup, decay) for step in range(decay + 50)]
    assert lrs == expected


def test_schedule_apply_sets_every_group():
    a, b = Parameter([1.0]), Parameter([[1.0]])
    opt = AdamW([{"params": [a], "weight_decay": 0.0}, {"params": [b], "lr": 5.0}])
    schedule = CosineWarmupSchedule(1e-3, 1e-4, 100, 2000)
    assert schedule.apply(opt, 0) == 1e-3 / 101
    assert [g["lr"] for g in opt.param_groups] == [1e-3 / 101, 1e-3 / 101]


# -------------------------------------------------------------------------- checkpoints ----
def _train(model, opt, X, Y, steps, schedule=None):
    for step in steps:
        if schedule is not None: schedule.apply(opt, step)
        loss = _loss(model, X[step], Y[step], step)
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


@pytest.mark.parametrize("make", [
    lambda ps: AdamW(weight_decay_groups(ps, 0.1), lr=0.01, betas=(0.9, 0.95)),
    lambda ps: Adam(ps, lr=0.01, weight_decay=0.01),
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
], ids=["adamw_groups", "adam", "sgd_nesterov"])
def test_state_dict_resumes_training_exactly(tmp_path, make):
    X, Y = _data(np.float32)
    schedule = CosineWarmupSchedule(0.01, 0.001, 10, 90)
    model = MLP(extra=True)
    opt = make(model.parameters())
    _train(model, opt, X, Y, range(50), schedule)
    save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "ckpt.npz")
    _train(model, opt, X, Y, range(50, 100), schedule)
    reference = [p.data.copy() for p in model.parameters()]

    checkpoint = load(tmp_path / "ckpt.npz")
    fresh = MLP(seed=7, extra=True)
    fresh.load_state_dict(checkpoint["model"])
    fresh_opt = make(fresh.parameters())
    fresh_opt.load_state_dict(checkpoint["optimizer"])
    assert fresh_opt.param_groups[0]["lr"] == schedule(49)               # options, including lr, are restored
    _train(fresh, fresh_opt, X, Y, range(50, 100), schedule)
    for ours, ref in zip(fresh.parameters(), reference):
        assert ours.dtype == np.float32 and np.array_equal(ours.data, ref)
    for p in fresh.parameters():
        for k, v in fresh_opt.state[p].items():
            if k != "step": assert v.dtype == np.float32


def test_state_dict_is_torch_shaped():
    model = MLP()
    opt = AdamW(weight_decay_groups(model.parameters(), 0.1), lr=0.01)
    _train(model, opt, *_data(np.float32), range(3))
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]      # fc1.weight, fc2.weight | biases
    assert [g["weight_decay"] for g in sd["param_groups"]] == [0.1, 0.0]
    assert sorted(sd["state"]) == [0, 1, 2, 3] and sd["state"][2]["step"] == 3
    assert sd["state"][0]["exp_avg"].shape == (HIDDEN, IN) and sd["state"][2]["exp_avg"].shape == (HIDDEN,)
    state0 = opt.state[model.fc1.weight]["exp_avg"]
    assert not np.shares_memory(sd["state"][0]["exp_avg"], state0)           # a copy, not a reference


def test_load_state_dict_checks_group_sizes():
    model = MLP()
    opt = AdamW(weight_decay_groups(model.parameters(), 0.1))
    sd = opt.state_dict()
    other = AdamW(model.parameters())
    with pytest.raises(ValueError, match="loaded state dict has 2 parameter groups, but the optimizer has 1"):
        other.load_state_dict(sd)
    swapped = AdamW([{"params": [model.fc1.weight]}, {"params": [model.fc1.bias, model.fc2.weight, model.fc2.bias]}])
    with pytest.raises(ValueError, match="parameter group 0: loaded state dict has 2 parameters, but the optimizer group has 1"):
        swapped.load_state_dict(sd)
    with pytest.raises(ValueError, match=r"expects a dict with keys 'param_groups' and 'state', got \['model'\]"):
        opt.load_state_dict({"model": {}})
    with pytest.raises(ValueError, match="loaded state has an entry for parameter 9, which no parameter group lists"):
        opt.load_state_dict({"state": {9: {}}, "param_groups": sd["param_groups"]})
    with pytest.raises(ValueError, match="Invalid learning rate: -1 in loaded parameter group 1"):
        opt.load_state_dict({"state": {}, "param_groups": [sd["param_groups"][0], {**sd["param_groups"][1], "lr": -1}]})


# --------------------------------------------------------------------- dtype and identity ----
OPTIMIZERS = {
    "adamw": lambda ps: AdamW(ps, lr=1e-3, weight_decay=0.1),
    "adam_l2": lambda ps: Adam(ps, lr=1e-3, weight_decay=0.1),
    "sgd_nesterov_wd": lambda ps: SGD(ps, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=0.1),
    "sgd_dampening_wd": lambda ps: SGD(ps, lr=1e-3, momentum=0.9, dampening=0.5, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_steps_update_in_place_and_keep_float32(name):
    rng = np.random.default_rng(0)
    big = Parameter(rng.standard_normal((1000, 1000)).astype(np.float32))
    small = Parameter(rng.standard_normal(1000).astype(np.float32))
    opt = OPTIMIZERS[name]([big, small])
    for p in (big, small): p.grad = Tensor(rng.standard_normal(p.shape).astype(np.float32))
    arrays = [p.data for p in (big, small)]
    opt.step()                                                       # the first step allocates the state
    opt.step()
    state = {id(p): {k: v for k, v in opt.state[p].items() if isinstance(v, np.ndarray)} for p in (big, small)}

    for _ in range(3): opt.step()

    for p, arr in zip((big, small), arrays):
        assert p.data is arr and p.dtype == np.float32 and p.grad.dtype == np.float32
        for k, v in opt.state[p].items():
            if isinstance(v, np.ndarray):
                assert v is state[id(p)][k] and v.dtype == np.float32 and not np.shares_memory(v, p.data)
