"""A training loop of one's own, swept by hypersweep as it is: handwritten digits, a small MLP,
AdamW with a linear warm-up and a cosine decay of the learning rate, gradient accumulation.

The loop is plain PyTorch. The lines marked ``# hypersweep`` are all it takes to sweep it: the
function takes ``(config, trial)``, reports each epoch, checkpoints, and restores when a retry
or a resumed sweep runs it again. Run it alone with ``python examples/own_loop/train.py``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor, nn

import hypersweep  # hypersweep


@functools.cache
def digits(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1]: 80 % train, 20 % validation."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    inputs, targets = torch.tensor(x, dtype=torch.float32)[order] / 16.0, torch.tensor(y)[order]
    cut = int(0.8 * len(x))
    return inputs[:cut], targets[:cut], inputs[cut:], targets[cut:]


def warmup_cosine(warmup_steps: int, total_steps: int) -> Any:
    """The learning rate's factor at each optimizer step: linear warm-up, then a cosine to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def make_optimizer(model: nn.Module, config: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum; both with the config's weight decay."""
    lr, decay = float(config["lr"]), float(config["weight_decay"])
    if config.get("optimizer", "adamw") == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)


@hypersweep.reports("val_accuracy")  # hypersweep: the metrics it reports besides the losses
def train(config: dict[str, Any], trial: hypersweep.Trial) -> None:  # hypersweep: (config, trial)
    device = trial.device  # hypersweep
    x_train, y_train, x_val, y_val = (t.to(device) for t in digits(seed=trial.seed))
    hidden, dropout = int(config.get("hidden", 64)), float(config["dropout"])
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10)).to(
        device
    )
    opt = make_optimizer(model, config)
    batch, accumulate = int(config["batch_size"]), int(config["accumulate"])
    steps_per_epoch = math.ceil(len(x_train) / (batch * accumulate))
    total = steps_per_epoch * trial.max_epochs  # hypersweep: the sweep's epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(config["warmup_epochs"] * steps_per_epoch, total)
    )
    shuffle = torch.Generator().manual_seed(trial.seed)

    start = 1
    state = trial.restore()  # hypersweep: None on a fresh start
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        schedule.load_state_dict(state["schedule"])
        shuffle.set_state(state["shuffle"])
        start = state["epoch"] + 1

    for epoch in range(start, trial.max_epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=shuffle).to(device)
        total_loss = 0.0
        for i, first in enumerate(range(0, len(x_train), batch)):
            rows = order[first : first + batch]
            loss = nn.functional.cross_entropy(model(x_train[rows]), y_train[rows])
            (loss / accumulate).backward()  # gradients add up over `accumulate` mini-batches
            total_loss += float(loss.detach()) * len(rows)
            if (i + 1) % accumulate == 0 or first + batch >= len(x_train):
                opt.step()
                opt.zero_grad()
                schedule.step()
        model.eval()
        with torch.no_grad():
            out = model(x_val)
            val_loss = float(nn.functional.cross_entropy(out, y_val))
            val_accuracy = float((out.argmax(1) == y_val).float().mean())
        trial.report(  # hypersweep: returns while the trial goes on
            epoch, train_loss=total_loss / len(x_train), val_loss=val_loss, val_accuracy=val_accuracy
        )
        trial.checkpoint(  # hypersweep: what trial.restore() gives back
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "schedule": schedule.state_dict(),
                "shuffle": shuffle.get_state(),
                "epoch": epoch,
            }
        )


if __name__ == "__main__":  # the same function, outside any sweep
    hypersweep.Trial(max_epochs=10).run(
        train,
        {
            "lr": 3e-3,
            "weight_decay": 0.01,
            "dropout": 0.1,
            "batch_size": 32,
            "accumulate": 2,
            "warmup_epochs": 1,
        },
    )
