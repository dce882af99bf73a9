"""Small PyTorch building blocks shared by experiments (torch only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from hypersweep.errors import not_one_of

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``tanh``, ``sigmoid``, ...)."""
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"activation: {not_one_of(name, ACTIVATIONS)}") from None


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    *,
    act: str = "relu",
    dropout: float = 0.0,
) -> nn.Sequential:
    """A stack of perceptron layers: (Linear -> activation -> Dropout) per hidden size, then Linear."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, int(size)), activation(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(size)
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def mlp_from_config(config: Mapping[str, Any], in_features: int, out_features: int) -> nn.Sequential:
    """``mlp`` sized and regularised by a trial's config: ``hidden_sizes``, ``activation``, ``dropout``."""
    return mlp(
        in_features,
        config["hidden_sizes"],
        out_features,
        act=str(config["activation"]),
        dropout=float(config["dropout"]),
    )
