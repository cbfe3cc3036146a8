"""Unit-sphere normalisation and DGCNN's training augmentation."""
import pytest
import torch
from torch_geometric.data import Data

from mgic_geo.data import NormalizeUnitSphere, RandomAnisotropicScale, RandomShift, ShufflePoints, dgcnn_augmentation


def test_normalize_centres_and_puts_the_farthest_point_on_the_unit_sphere():
    pos = torch.randn(500, 3) * torch.tensor([1e5, 3e4, 10.0]) + 7e4
    out = NormalizeUnitSphere()(Data(pos=pos)).pos
    assert out.mean(0).abs().max() < 1e-5
    assert out.norm(dim=1).max() == pytest.approx(1.0, abs=1e-6)
    single = NormalizeUnitSphere()(Data(pos=torch.tensor([[5.0, 5.0, 5.0]]))).pos
    assert torch.equal(single, torch.zeros(1, 3))  # no 0/0


def test_anisotropic_scale_draws_one_factor_per_axis_in_range():
    factors = torch.stack([RandomAnisotropicScale()(Data(pos=torch.eye(3))).pos.diagonal() for _ in range(200)])
    assert factors.min() >= 2 / 3 and factors.max() <= 3 / 2
    assert (factors[:, 0] != factors[:, 1]).all()  # anisotropic, unlike PyG's RandomScale
    with pytest.raises(ValueError, match="low <= high"):
        RandomAnisotropicScale(2.0, 1.0)


def test_shift_moves_the_whole_cloud_within_range():
    pos = torch.randn(100, 3)
    shifts = torch.stack([RandomShift()(Data(pos=pos.clone())).pos - pos for _ in range(100)])
    assert torch.allclose(shifts, shifts[:, :1].expand_as(shifts), atol=1e-6)  # one offset per cloud
    assert shifts.abs().max() <= 0.2 + 1e-6 and shifts.abs().max() > 0.1
    with pytest.raises(ValueError, match="shift >= 0"):
        RandomShift(-1.0)


def test_shuffle_is_a_permutation_of_points_and_their_attributes():
    pos = torch.arange(30.0).view(10, 3)
    out = ShufflePoints()(Data(pos=pos.clone(), normal=pos.clone(), y=torch.tensor([4])))
    assert not torch.equal(out.pos, pos)
    assert torch.equal(out.pos.sort(0).values, pos) and torch.equal(out.normal, out.pos) and out.y.tolist() == [4]


def test_dgcnn_augmentation_composes_scale_shift_shuffle():
    names = [type(t).__name__ for t in dgcnn_augmentation().transforms]
    assert names == ["RandomAnisotropicScale", "RandomShift", "ShufflePoints"]
