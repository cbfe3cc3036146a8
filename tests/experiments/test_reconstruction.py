import argparse
import math

import pytest
import torch

from mgic_geo.experiments import first_layer, reconstruction, transfer_autoencoder

# Small but real: 40 crops of 32 px (16x16 feature maps); from the averaging init the operators
# need a few hundred steps to leave their plateau, so fewer steps would test nothing.
SMALL = dict(crops=40, crop_size=32, steps=300, batch_size=128, seed=0)
PAPER_PARAMS = {32: 3328, 16: 1792, 8: 896, 4: 448}


def run(argv):
    parser = argparse.ArgumentParser()
    reconstruction.add_arguments(parser)
    return reconstruction.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reconstruction")
    return out, reconstruction.reconstruction_experiment(out, **SMALL)


def fake_resnet50_state(**overrides):
    state = {
        "conv1.weight": torch.randn(64, 3, 7, 7) * 0.05,
        "bn1.weight": torch.rand(64) + 0.5,
        "bn1.bias": torch.randn(64) * 0.1,
        "bn1.running_mean": torch.randn(64) * 0.1,
        "bn1.running_var": torch.rand(64) + 0.5,
        "bn1.num_batches_tracked": torch.tensor(1),
        "fc.weight": torch.zeros(10, 2048),
    }
    state.update(overrides)
    return {key: value for key, value in state.items() if value is not None}


def test_writes_table_csv_and_figure_with_one_row_per_group_size(tiny_run):
    out, rows = tiny_run
    for name in ("reconstruction.md", "reconstruction.csv", "reconstruction.png"):
        assert (out / name).stat().st_size > 0
    assert [row["s_g"] for row in rows] == [32, 16, 8, 4]
    assert (out / "reconstruction.csv").read_text().strip().count("\n") == 4
    markdown = (out / "reconstruction.md").read_text()
    assert "filter bank" in markdown and "1,024 ImageNet images" in markdown


def test_transfer_operator_params_match_the_paper(tiny_run):
    _, rows = tiny_run
    assert {row["s_g"]: row["measured params"] for row in rows} == PAPER_PARAMS
    assert [row["paper params [K]"] for row in rows] == [3.3, 1.8, 0.9, 0.4]


def test_training_reduces_the_error_of_the_untrained_operators(tiny_run):
    _, rows = tiny_run
    for row in rows:
        for column in ("measured test MSE (1e-3)", "measured train MSE (1e-3)", "untrained test MSE (1e-3)"):
            assert math.isfinite(row[column]) and row[column] > 0
        assert row["measured test MSE (1e-3)"] < 0.9 * row["untrained test MSE (1e-3)"]


def test_same_seed_gives_identical_numbers(tmp_path):
    def numbers(seed):
        return reconstruction.reconstruction_experiment(
            tmp_path, group_sizes=(32, 4), crops=8, crop_size=32, steps=20, seed=seed
        )

    first = numbers(seed=5)
    assert numbers(seed=5) == first
    assert numbers(seed=6) != first


def test_best_linear_mse_is_the_energy_outside_the_top_eigenvectors():
    basis = torch.linalg.qr(torch.randn(16, 3)).Q  # rank-3 data in 16 channels
    vectors = torch.randn(500, 3) @ basis.T
    assert transfer_autoencoder.best_linear_mse(vectors, 3) == pytest.approx(0, abs=1e-6)
    assert transfer_autoencoder.best_linear_mse(vectors, 0) == pytest.approx(float((vectors.double() ** 2).mean()))


def test_filter_bank_is_deterministic_and_zero_mean_where_documented():
    bank = first_layer.gabor_colour_filter_bank()
    assert bank.shape == (64, 3, 7, 7)
    assert torch.equal(bank, first_layer.gabor_colour_filter_bank())
    # 48 Gabors and 4 difference-of-Gaussians ignore flat regions; the 12 blobs do not
    assert bank[:52].sum(dim=(1, 2, 3)).abs().max() < 1e-5
    assert (bank[52:].sum(dim=(2, 3)).abs().amax(dim=1) > 0.1).all()


def test_resnet50_checkpoint_is_used_and_reported(tmp_path, capsys):
    checkpoint = tmp_path / "fake_resnet50.pth"
    torch.save(fake_resnet50_state(), checkpoint)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--resnet50-checkpoint", str(checkpoint), "--group-sizes", "8"]
    argv += ["--crops", "4", "--crop-size", "32", "--steps", "5"]
    assert run(argv) == 0
    markdown = (out / "reconstruction.md").read_text()
    assert "ResNet-50 conv1 -> bn1 (eval) -> ReLU" in markdown and "fake_resnet50.pth" in markdown
    assert "filter bank" not in markdown
    assert "ResNet-50 conv1" in capsys.readouterr().out


def test_resnet50_first_layer_computes_conv_bn_relu(tmp_path):
    state = fake_resnet50_state()
    checkpoint = tmp_path / "resnet50.pth"
    torch.save(state, checkpoint)
    images = torch.randn(2, 3, 20, 20)
    expected = torch.nn.functional.conv2d(images, state["conv1.weight"], stride=2, padding=3)
    expected = (expected - state["bn1.running_mean"].view(1, -1, 1, 1)) / torch.sqrt(
        state["bn1.running_var"].view(1, -1, 1, 1) + 1e-5
    )
    expected = torch.relu(expected * state["bn1.weight"].view(1, -1, 1, 1) + state["bn1.bias"].view(1, -1, 1, 1))
    with torch.no_grad():
        actual = first_layer.resnet50_first_layer(checkpoint)(images)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize(
    "state, message",
    [
        (None, "does not exist"),
        (fake_resnet50_state(**{"conv1.weight": None}), "lacks .*conv1.weight"),
        (fake_resnet50_state(**{"conv1.weight": torch.zeros(64, 3, 3, 3)}), "conv1.weight should have shape"),
        ([1, 2, 3], "not a state_dict"),
    ],
)
def test_bad_checkpoint_is_an_error_naming_the_file(tmp_path, state, message):
    checkpoint = tmp_path / "bad_resnet50.pth"
    if state is not None:
        torch.save(state, checkpoint)
    with pytest.raises(ValueError, match=f"bad_resnet50.pth.*{message}"):
        run(["--out", str(tmp_path / "out"), "--resnet50-checkpoint", str(checkpoint)])
    assert not (tmp_path / "out").exists()


def test_unreadable_checkpoint_is_an_error_naming_the_file(tmp_path):
    checkpoint = tmp_path / "garbage.pth"
    checkpoint.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pth.*could not be read"):
        run(["--out", str(tmp_path / "out"), "--resnet50-checkpoint", str(checkpoint)])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "`--steps`"),
        (["--crops", "1"], "`--crops`"),
        (["--group-sizes", "8", "-4"], "`--group-sizes`"),
        (["--group-sizes", "8", "8"], "`--group-sizes` has repeated"),
        (["--coarsest", "64"], "`--coarsest`"),
        (["--batch-size", "0"], "`--batch-size`"),
        (["--crop-size", "5000"], "`--crop-size`"),
    ],
)
def test_bad_options_name_the_option(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        run(["--out", str(tmp_path), *argv])
