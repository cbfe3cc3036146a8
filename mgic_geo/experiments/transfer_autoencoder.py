"""The transfer operators of an MGIC block as an autoencoder, and its training (Table 1).

The encoder applies the restrictions ``R_0 .. R_{L-1}`` of an :class:`~mgic_geo.core.MGICBlock` in
order and the decoder the prolongations ``P_{L-1} .. P_0`` (no level blocks, no normalisations, no
skip connections); :func:`best_linear_mse` is the floor any rank-limited linear code can reach.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mgic_geo.core import MGICBlock, MGICConfig

LEARNING_RATE = 3e-2
ADAM_BETAS = (0.9, 0.99)
WARMUP_FRACTION = 0.05
DECAY_START_FRACTION = 2 / 3


class TransferAutoencoder(nn.Module):
    """Encode with the restrictions of an :class:`~mgic_geo.core.MGICBlock` and decode with its
    prolongations; no level blocks, normalisations or skip connections.

    Args:
        channels (int): width of the feature maps.
        group_size (int): ``s_g``.
        coarsest (int): ``s_c``.
    """

    def __init__(self, channels: int, *, group_size: int, coarsest: int):
        super().__init__()
        block = MGICBlock(channels, lambda width, groups: nn.Identity(), MGICConfig(group_size=group_size, coarsest=coarsest))
        self.widths, self.groups = block.widths, block.groups
        self.restrictions = block.restrictions
        self.prolongations = block.prolongations

    def encode(self, x: Tensor) -> Tensor:
        for restrict in self.restrictions:
            x = restrict(x)
        return x

    def decode(self, x: Tensor) -> Tensor:
        for prolong in reversed(self.prolongations):
            x = prolong(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def pixel_vectors(features: Tensor) -> Tensor:
    """``[N, C, H, W]`` feature maps as ``[N * H * W, C]`` rows, one per pixel."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).contiguous()


def reconstruction_mse(model: nn.Module, vectors: Tensor, chunk_size: int = 65536) -> float:
    """Mean squared error of ``model(vectors)`` over every element of ``vectors``."""
    with torch.no_grad():
        total = sum(float(((model(chunk) - chunk) ** 2).sum()) for chunk in vectors.split(chunk_size))
    return total / vectors.numel()


def best_linear_mse(vectors: Tensor, rank: int) -> float:
    """The lowest MSE any linear ``C -> rank -> C`` map reaches on ``vectors`` (``[M, C]``): the
    energy outside the top ``rank`` eigenvectors of the uncentred second-moment matrix (the maps
    are bias-free, so the mean is not removed)."""
    vectors = vectors.double()
    eigenvalues = torch.linalg.eigvalsh(vectors.T @ vectors / vectors.shape[0])  # ascending
    return float(eigenvalues[: vectors.shape[1] - rank].sum()) / vectors.shape[1]


def train_autoencoder(
    model: nn.Module,
    vectors: Tensor,
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    description: str,
) -> None:
    """Adam on the reconstruction MSE of mini-batches of pixel vectors drawn from ``vectors``.

    The transfer operators are 1x1 (channel-only) maps, so every pixel's feature vector is an
    independent sample and a mini-batch of pixels gives the same loss as whole maps at a fraction
    of the cost. From the paper's averaging init all coarse channels start nearly equal, and the
    operators pass through plateaus (a rank-deficient coarse level) before they settle. The
    schedule is tuned so that every ``s_g`` reaches the best error its structure allows within the
    default budget (checked for ``s_g = 32``, the slowest, on 16 seeds at the default sizes): a short linear warm-up,
    a constant rate for two thirds of the steps to leave the plateaus, a cosine decay over the last
    third to settle, and ``beta2 = 0.99`` so Adam's step size re-adapts within ~100 steps when the
    gradients grow on leaving a plateau instead of overshooting.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, betas=ADAM_BETAS)
    warmup = max(1, round(WARMUP_FRACTION * steps))
    decay_start = round(DECAY_START_FRACTION * steps)

    def rate_factor(step: int) -> float:
        decay_progress = max(0, step - decay_start) / max(1, steps - decay_start)
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * decay_progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate_factor)
    progress = tqdm(range(steps), desc=description, unit="step", leave=False, mininterval=0.5)
    for _ in progress:
        batch = vectors[torch.randint(vectors.shape[0], (batch_size,), generator=generator)]
        loss = nn.functional.mse_loss(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        progress.set_postfix(mse=f"{loss.item():.4g}", refresh=False)
