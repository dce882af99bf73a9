"""Making new digits: a variational autoencoder learns the 8x8 digits and draws its own.

The encoder maps an image (64 pixels in [0, 1]) to a Gaussian over a small latent space
(mean, log-variance); the decoder maps a latent point back to 64 pixel logits. The loss per image
is the reconstruction error (Bernoulli cross-entropy summed over pixels, in nats) plus the KL
divergence from the standard normal prior; both parts are also reported (``val_recon``,
``val_kl``). In eval mode the encoder's mean is decoded (no sampling), so validation is
deterministic. Each finished trial keeps ``samples.png``: 64 digits decoded from prior samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from experiments._png import png_grey, tile
from experiments._tabular import split_rows
from hypersweep.experiment import Data, Experiment, Output, Split
from hypersweep.layers import mlp

PIXELS = 64  # 8 x 8
SAMPLES = 64  # images in samples.png: an 8 x 8 grid


class VAE(nn.Module):
    """(B, 64) images -> (pixel logits (B, 64), mu (B, Z), log-variance (B, Z))."""

    def __init__(self, *, hidden: int, latent: int, act: str, dropout: float) -> None:
        super().__init__()
        self.encoder = mlp(PIXELS, [hidden], 2 * latent, act=act, dropout=dropout)
        self.decoder = mlp(latent, [hidden], PIXELS, act=act)
        self.latent = latent

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, log_var = self.encoder(x).chunk(2, dim=1)
        # Reparameterisation: z = mu + sigma * eps keeps the sample differentiable in mu, sigma.
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp() if self.training else mu
        return self.decoder(z), mu, log_var

    def sample(self, n: int, *, seed: int = 0) -> Tensor:
        """(n, 64) pixel intensities in [0, 1] decoded from the prior N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent, generator=torch.Generator().manual_seed(seed)).to(device)
        return torch.sigmoid(self.decoder(z))


class DigitsVAE(Experiment):
    metric_names: ClassVar[tuple[str, ...]] = ("val_recon", "val_kl")
    default_config: ClassVar[Mapping[str, Any]] = {
        "hidden_size": 128,
        "latent_dim": 8,
        "activation": "relu",
        "dropout": 0.0,
    }

    def load_data(self, *, seed: int) -> Data:
        from sklearn.datasets import load_digits  # seconds to import: only where the data loads

        images = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)  # (N, 64) in [0, 1]
        parts = split_rows(len(images), seed=seed)
        # An autoencoder's target is its own input.
        return Data(*(Split(images[rows], images[rows]) for rows in parts))

    def build_model(self, config: Mapping[str, Any], data: Data) -> nn.Module:
        return VAE(
            hidden=int(config["hidden_size"]),
            latent=int(config["latent_dim"]),
            act=str(config["activation"]),
            dropout=float(config["dropout"]),
        )

    def loss(self, output: Output, target: Tensor) -> Tensor:
        recon, kl = _parts(output, target)
        return (recon + kl).mean()

    def metrics(self, output: Output, target: Tensor) -> dict[str, float]:
        recon, kl = _parts(output, target)
        return {"val_recon": float(recon.mean()), "val_kl": float(kl.mean())}

    def artifacts(self, model: nn.Module, data: Data) -> dict[str, bytes]:
        assert isinstance(model, VAE)
        images = model.sample(SAMPLES).reshape(SAMPLES, 8, 8).cpu().numpy()
        # Ink is dark on a light page: invert so digits look like digits (light lines between).
        return {"samples.png": png_grey(tile(1.0 - images, columns=8, scale=4))}


def _parts(output: Output, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image reconstruction error and KL divergence, both (B,) in nats."""
    assert isinstance(output, tuple)
    logits, mu, log_var = output
    recon = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(dim=1)
    kl = 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(dim=1)
    return recon, kl
