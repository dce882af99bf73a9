"""A test experiment that fails on purpose: raises, or kills its own worker, at a chosen epoch.

Its fixed config says where and how (``fault_dir``, ``fault``: raise | kill | none,
``fault_epoch``, ``fault_attempts``: how many attempts of each trial fail, ``epoch_sleep`` in
seconds, ``artifacts``: attach a file to each finished trial's run). It writes one line per event
to ``fault_dir/<trial key>.log`` (``build``, ``eval``) so a test can tell whether a retry started
from a checkpoint or from epoch 0.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hypersweep.experiment import Data, Output
from tests.toy import ToyRegression


class ChaosToy(ToyRegression):
    default_config: ClassVar[Mapping[str, Any]] = {
        "dropout": 0.0,
        "fault": "none",
        "fault_epoch": 2,
        "fault_attempts": 1,
        "epoch_sleep": 0.0,
        "artifacts": False,  # a finished trial attaches a small file (its lr)
    }

    def build_model(self, config: Mapping[str, Any], data: Data) -> nn.Module:
        if torch.empty(0).is_meta:  # the driver's preflight (registry.check_builds): not a trial
            return super().build_model(config, data)
        self.cfg = dict(config)
        self.log = Path(str(config.get("fault_dir", "."))) / f"{float(config['lr']):.12g}.log"
        self.attempt = 1 + _count(self.log, "build")
        self.evals = 0
        _append(self.log, "build")
        return super().build_model(config, data)

    def metrics(self, output: Output, target: Tensor) -> dict[str, float]:
        # Called once before training (fresh start only) and once per epoch.
        self.evals += 1
        _append(self.log, "eval")
        time.sleep(float(self.cfg["epoch_sleep"]))
        fault, attempt = self.cfg["fault"], self.attempt
        at = int(self.cfg["fault_epoch"]) + 1 if attempt == 1 else 1
        if fault != "none" and attempt <= int(self.cfg["fault_attempts"]) and self.evals == at:
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected fault in attempt {attempt}")
        return super().metrics(output, target)

    def artifacts(self, model: nn.Module, data: Data) -> dict[str, bytes]:
        return {"lr.txt": str(self.cfg["lr"]).encode()} if self.cfg.get("artifacts") else {}


def _append(path: Path, line: str) -> None:
    with path.open("a") as handle:
        handle.write(line + "\n")


def _count(path: Path, line: str) -> int:
    return path.read_text().split().count(line) if path.is_file() else 0
