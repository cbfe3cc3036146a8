"""Point-cloud transforms PyG lacks: unit-sphere normalisation and DGCNN's training augmentation.

PyG's ``RandomScale`` is isotropic and its ``RandomJitter`` moves every point separately; DGCNN
scales each axis by its own factor and translates the whole cloud, then shuffles the points. All
randomness comes from torch's global generator, so it follows ``torch.manual_seed`` (Lightning's
``seed_everything``) and the per-worker seeds of a ``DataLoader``.
"""
from __future__ import annotations

import torch
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform, Compose


class NormalizeUnitSphere(BaseTransform):
    """Centre the cloud on its centroid and scale it so the farthest point lies on the unit sphere.

    (PyG's ``NormalizeScale`` scales the largest coordinate to 1 instead, which leaves corners of
    the cloud up to :math:`\\sqrt 3` away.)
    """

    def forward(self, data: Data) -> Data:
        pos = data.pos - data.pos.mean(dim=0, keepdim=True)
        radius = pos.norm(dim=1).max().clamp_min(torch.finfo(pos.dtype).tiny)  # a single point stays at 0
        data.pos = pos / radius
        return data


class RandomAnisotropicScale(BaseTransform):
    """Scale each axis by its own factor drawn from :math:`U[low, high]` (DGCNN: 2/3, 3/2)."""

    def __init__(self, low: float = 2 / 3, high: float = 3 / 2):
        if not 0 < low <= high:
            raise ValueError(f"RandomAnisotropicScale needs 0 < low <= high, got low={low!r}, high={high!r}")
        self.low, self.high = low, high

    def forward(self, data: Data) -> Data:
        factors = torch.empty(data.pos.shape[-1], dtype=data.pos.dtype).uniform_(self.low, self.high)
        data.pos = data.pos * factors
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(low={self.low:.4g}, high={self.high:.4g})"


class RandomShift(BaseTransform):
    """Translate the whole cloud by a vector drawn from :math:`U[-shift, shift]` per axis (DGCNN: 0.2)."""

    def __init__(self, shift: float = 0.2):
        if not shift >= 0:
            raise ValueError(f"RandomShift needs shift >= 0, got {shift!r}")
        self.shift = shift

    def forward(self, data: Data) -> Data:
        offset = torch.empty(data.pos.shape[-1], dtype=data.pos.dtype).uniform_(-self.shift, self.shift)
        data.pos = data.pos + offset
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(shift={self.shift:.4g})"


class ShufflePoints(BaseTransform):
    """Put the points (and every per-point attribute) in a random order."""

    def forward(self, data: Data) -> Data:
        count = data.num_nodes
        order = torch.randperm(count)
        for key, value in data.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == count and key != "y":
                data[key] = value[order]
        return data


def dgcnn_augmentation(scale: tuple[float, float] = (2 / 3, 3 / 2), shift: float = 0.2) -> Compose:
    """DGCNN's training augmentation: anisotropic scale, translation, point shuffle."""
    return Compose([RandomAnisotropicScale(*scale), RandomShift(shift), ShufflePoints()])
