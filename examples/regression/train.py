"""A plain PyTorch training loop, with the platform's spot machinery in the lines marked ``# tuner``.

Regression on scikit-learn's bundled diabetes data (442 patients, 10 features; real and
offline), a small MLP trained with AdamW for ``settings["steps"]`` steps, validation MSE
reported every ``settings["eval_every"]`` steps. The data order is a pure function of
(seed, step), so a trial resumed from a checkpoint (after a spot notice, on another node)
finishes with bit-identical metrics. It also runs data-parallel on several workers: each
takes its shards of the same global batch and DDP averages the gradients, so the result
does not depend on the width (``search.resources.workers``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from tuner import session  # tuner


def data(seed: int) -> tuple[torch.Tensor, ...]:
    """Standardised features and target, split 80/20 with a fixed seed."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, val = order[: int(0.8 * len(x))], order[int(0.8 * len(x)) :]
    mean, std, y_mean, y_std = x[train].mean(0), x[train].std(0), y[train].mean(), y[train].std()
    return (x[train] - mean) / std, (y[train] - y_mean) / y_std, (x[val] - mean) / std, (y[val] - y_mean) / y_std


def batch(n: int, size: int, seed: int, step: int) -> torch.Tensor:
    """The indices of step ``step``: each pass over the data is a fresh permutation seeded by (seed, pass)."""
    per_pass = n // size
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + step // per_pass))
    return order[(step % per_pass) * size : (step % per_pass + 1) * size]


def fit(config: dict[str, Any], settings: dict[str, Any]) -> None:
    torch.manual_seed(settings["seed"])
    x, y, x_val, y_val = data(settings["seed"])
    layers: list[nn.Module] = []
    for i in range(config["layers"]):
        layers += [nn.Linear(x.shape[1] if i == 0 else config["hidden"], config["hidden"]), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(config["hidden"], 1))
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    step = 0
    ckpt = session.get_checkpoint()  # tuner
    if ckpt is not None:  # tuner
        saved = ckpt.load()  # tuner
        model.load_state_dict(saved["model"])  # tuner
        opt.load_state_dict(saved["opt"])  # tuner
        step = saved["step"]  # tuner
    ctx = session.get_context()  # tuner: this worker's rank and the width of the trial
    net = nn.parallel.DistributedDataParallel(model) if ctx.world_size > 1 else model

    def state() -> dict[str, Any]:  # tuner
        return {"model": model.state_dict(), "opt": opt.state_dict(), "step": step}  # tuner

    while step < settings["steps"]:
        idx = batch(len(x), config["batch_size"], settings["seed"], step)
        opt.zero_grad()
        shards = ctx.shards(len(idx))  # tuner: this worker's micro-batches of the global batch
        for i, part in enumerate(shards):
            last = i == len(shards) - 1  # DDP all-reduces the summed gradient once, after the last
            with contextlib.nullcontext() if last or ctx.world_size == 1 else net.no_sync():
                out = net(x[idx[part]]).squeeze(1)
                loss = nn.functional.mse_loss(out, y[idx[part]], reduction="sum") * ctx.loss_scale(len(idx))
                loss.backward()
        opt.step()
        step += 1
        session.step(state)  # tuner: a spot notice saves here
        if step % settings["eval_every"] == 0 or step == settings["steps"]:
            with torch.no_grad():
                val_loss = nn.functional.mse_loss(model(x_val).squeeze(1), y_val).item()
            session.report({"step": step, "val_loss": val_loss}, checkpoint=state)  # tuner
