import pytest
import torch

from mgic_geo.core.grouped import (
    _supergroup_size,
    block_diagonal,
    grouped_channel_map,
    grouped_maps_by_supergroup,
    is_channel_major,
    to_channel_major,
    to_row_major,
)


def reference(x, weight):
    """Dense block-diagonal matrix applied to channel dimension 1."""
    return torch.einsum("oi,ni...->no...", block_diagonal(weight), x)


SHAPES = {
    "nodes": (37, 64),
    "sequence": (3, 64, 11),
    "image": (2, 64, 5, 6),
    "volume": (2, 64, 3, 4, 2),
}


@pytest.mark.parametrize("layout", list(SHAPES) + ["channels_last", "channel_major_nodes"])
@pytest.mark.parametrize("groups, out_per_group, in_per_group", [(8, 4, 8), (16, 8, 4), (1, 32, 64), (4, 16, 16), (64, 1, 1)])
def test_every_formulation_equals_the_dense_block_diagonal_map(layout, groups, out_per_group, in_per_group):
    shape = SHAPES[{"channels_last": "image", "channel_major_nodes": "nodes"}.get(layout, layout)]
    shape = (shape[0], groups * in_per_group, *shape[2:])
    x = torch.randn(shape, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if layout == "channel_major_nodes":
        x = to_channel_major(x)
        assert is_channel_major(x)
    weight = torch.randn(groups, out_per_group, in_per_group, dtype=torch.float64)
    bias = torch.randn(groups * out_per_group, dtype=torch.float64)

    x1, w1, b1 = (t.clone().requires_grad_() for t in (x, weight, bias))
    x2, w2, b2 = (t.clone().requires_grad_() for t in (x, weight, bias))
    fast = grouped_channel_map(x1, w1, b1)
    slow = reference(x2, w2) + b2.view(1, -1, *([1] * (x.dim() - 2)))
    torch.testing.assert_close(fast, slow)

    grad = torch.randn_like(slow)
    fast.backward(grad)
    slow.backward(grad)
    for a, b in ((x1, x2), (w1, w2), (b1, b2)):
        torch.testing.assert_close(a.grad, b.grad)


def test_channels_last_input_gives_channels_last_output():
    x = torch.randn(2, 16, 4, 4).contiguous(memory_format=torch.channels_last)
    out = grouped_channel_map(x, torch.randn(4, 2, 4))
    assert out.shape == (2, 8, 4, 4)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_supergroups_pack_about_64_input_channels_and_divide_the_group_count():
    assert _supergroup_size(128, 8) == 8
    assert _supergroup_size(32, 4) == 16
    assert _supergroup_size(6, 8) == 6
    assert _supergroup_size(12, 8) == 6  # 8 does not divide 12
    assert _supergroup_size(4, 64) == 1


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected input with 64 channels in dimension 1, got shape \(5, 32\)"):
        grouped_channel_map(torch.randn(5, 32), torch.randn(8, 4, 8))


def test_channel_major_nodes_give_channel_major_output():
    x = to_channel_major(torch.randn(37, 64))
    assert x.stride() == (1, 37)
    out = grouped_channel_map(x, torch.randn(8, 4, 8))
    assert out.shape == (37, 32) and is_channel_major(out)
    assert to_channel_major(x) is x
    assert not is_channel_major(torch.randn(37, 64)) and not is_channel_major(torch.randn(1, 64).t().contiguous().t())


def test_layout_changes_keep_values_and_send_gradients_back_in_the_input_layout():
    row_major = torch.randn(6, 4, requires_grad=True)
    channel_major = to_channel_major(row_major)
    assert is_channel_major(channel_major) and torch.equal(channel_major, row_major)
    back = to_row_major(channel_major * 2)
    assert back.is_contiguous() and torch.equal(back, row_major * 2)
    grad = torch.randn(6, 4)
    (through_both,) = torch.autograd.grad(back, row_major, grad)
    torch.testing.assert_close(through_both, 2 * grad)
    # the gradient of to_row_major comes back channel-major, like its input
    source = torch.randn(4, 6).t().requires_grad_()
    captured = []
    source_view = source * 1
    source_view.register_hook(lambda g: captured.append(g))
    to_row_major(source_view).backward(grad)
    assert is_channel_major(captured[0]) and torch.equal(captured[0], grad)
    assert to_row_major(row_major) is row_major and to_channel_major(channel_major) is channel_major


@pytest.mark.parametrize("channels, groups", [(16, 2), (64, 8), (256, 32)])
def test_maps_by_supergroup_equal_one_grouped_map_per_feature(channels, groups):
    x = torch.randn(10, channels, dtype=torch.float64)
    weight = torch.randn(groups, 5, 3, channels // groups, dtype=torch.float64)
    blocks = grouped_maps_by_supergroup(x, weight)  # [supergroups, N, 5, width]
    out = blocks.permute(1, 2, 0, 3).reshape(10, 5, -1)
    for feature in range(5):
        torch.testing.assert_close(out[:, feature], grouped_channel_map(x, weight[:, feature]))
