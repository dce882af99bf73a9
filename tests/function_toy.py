"""Training loops of a user's own, as plain functions ``train(config, trial)``, for tests.

``toy_train`` fits the toy regression (``tests.toy``) in its own loop. Its fixed config may ask
for a fault (``fault: kill`` SIGKILLs its worker after reporting epoch ``fault_epoch`` of its first attempt)
and a trace: each attempt appends ``start <epoch>`` to ``fault_dir/<lr>.log``, so a test sees
where a retry started. ``epoch_sleep`` slows each epoch (seconds).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import hypersweep
from tests.toy import ToyRegression


def _data(seed: int) -> Any:
    return ToyRegression().load_data(seed=seed)


@hypersweep.reports("val_mae")
def toy_train(config: dict[str, Any], trial: hypersweep.Trial) -> None:
    data = _data(trial.seed)
    torch.manual_seed(trial.seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(trial.device)
    opt = torch.optim.SGD(model.parameters(), lr=float(config["lr"]))
    start = 1
    state = trial.restore()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"] + 1
    log = Path(str(trial.fixed.get("fault_dir", "."))) / f"{float(config['lr']):.12g}.log"
    if "fault_dir" in trial.fixed:
        with log.open("a") as out:
            out.write(f"start {start}\n")
    x, y = data.train.inputs.to(trial.device), data.train.targets.to(trial.device)
    for epoch in range(start, trial.max_epochs + 1):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            out = model(data.val.inputs.to(trial.device))
            target = data.val.targets.to(trial.device)
            val = float(nn.functional.mse_loss(out, target))
            mae = float((out - target).abs().mean())
        time.sleep(float(trial.fixed.get("epoch_sleep", 0.0)))
        trial.report(epoch, train_loss=float(loss.detach()), val_loss=val, val_mae=mae)
        trial.checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch})
        fault = trial.fixed.get("fault", "none")
        if fault == "kill" and start == 1 and epoch == int(trial.fixed.get("fault_epoch", 2)):
            time.sleep(0.5)  # the report and its checkpoint reach the driver (or not: it may lose)
            os.kill(os.getpid(), signal.SIGKILL)


def two_args_only(config: dict[str, Any]) -> None:
    """Cannot take (config, trial)."""
