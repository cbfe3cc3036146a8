"""Table 1 / Fig. 2 of the paper: how much of a 64-channel feature map survives the trip down the
channel hierarchy to the coarsest level and back (``mgic-geo experiment reconstruction``).

The transfer operators are studied in isolation, as in Sec. 5.1: the operators of
``MGICBlock(64, identity, MGICConfig(group_size=s_g, coarsest=s_c))`` are taken as they are, the encoder applies
the restrictions ``R_0 .. R_{L-1}`` in order and the decoder the prolongations ``P_{L-1} .. P_0``
(no level blocks, no normalisations, no skip connections). Each ``s_g`` gets its own operators,
trained with Adam to minimise the reconstruction MSE of the feature maps.

The feature maps and the filter bank are described in :mod:`mgic_geo.experiments.first_layer`, the
autoencoder and its training in :mod:`mgic_geo.experiments.transfer_autoencoder`.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from mgic_geo.experiments.first_layer import (CHANNELS, KERNEL_SIZE, extract_features, filter_bank_first_layer,
                                              imagenet_normalise, load_photos, random_crops, resnet50_first_layer)
from mgic_geo.experiments.transfer_autoencoder import (ADAM_BETAS, LEARNING_RATE, WARMUP_FRACTION,
                                                       TransferAutoencoder, best_linear_mse, pixel_vectors,
                                                       reconstruction_mse, train_autoencoder)
from mgic_geo.tables import prepare_output_dir, write_table
from mgic_geo.validation import check_int

DEFAULT_GROUP_SIZES = (32, 16, 8, 4)
DEFAULT_COARSEST = 8
DEFAULT_STEPS = 1500
DEFAULT_CROPS = 256
DEFAULT_CROP_SIZE = 96
DEFAULT_BATCH_SIZE = 256  # pixel vectors per step
TEST_FRACTION = 0.25

#: Paper Table 1 (s_c = 8): s_g -> (MSE in 1e-3, transfer-operator parameters in K).
PAPER_TABLE1 = {32: (11, 3.3), 16: (13, 1.8), 8: (17, 0.9), 4: (24, 0.4)}
PAPER_COARSEST = 8


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


def _validate(group_sizes, coarsest, steps, crops, crop_size, batch_size, seed) -> list[int]:
    group_sizes = list(group_sizes)
    if not group_sizes:
        raise ValueError("`--group-sizes` needs at least one group size")
    for group_size in group_sizes:
        check_int("--group-sizes", group_size)
    if len(set(group_sizes)) != len(group_sizes):
        raise ValueError(f"`--group-sizes` has repeated values: {group_sizes}")
    check_int("--coarsest", coarsest)
    if coarsest > CHANNELS // 2:
        # With s_c > c/2 the paper's rule builds no coarse level: nothing would be encoded.
        raise ValueError(
            f"`--coarsest` must be <= {CHANNELS // 2} so that {CHANNELS} channels are coarsened, got {coarsest}"
        )
    check_int("--steps", steps)
    check_int("--crops", crops, minimum=2)  # at least one train and one test crop
    check_int("--crop-size", crop_size, minimum=KERNEL_SIZE)
    check_int("--batch-size", batch_size)
    check_int("--seed", seed, minimum=0)
    return group_sizes


def reconstruction_experiment(
    out: str | Path,
    *,
    group_sizes=DEFAULT_GROUP_SIZES,
    coarsest: int = DEFAULT_COARSEST,
    steps: int = DEFAULT_STEPS,
    crops: int = DEFAULT_CROPS,
    crop_size: int = DEFAULT_CROP_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    resnet50_checkpoint: str | Path | None = None,
) -> list[dict]:
    """Train the transfer operators for every ``s_g`` in ``group_sizes`` and write
    ``reconstruction.md``/``.csv`` (the table, see :func:`~mgic_geo.tables.write_table`)
    and ``reconstruction.png`` (the figure) to ``out``. Returns the table rows.

    The same ``seed`` gives the same crops, initial operators, mini-batches and numbers.
    """
    group_sizes = _validate(group_sizes, coarsest, steps, crops, crop_size, batch_size, seed)
    # Read the checkpoint before the slower data preparation so a bad path fails at once.
    resnet_layer = resnet50_first_layer(resnet50_checkpoint) if resnet50_checkpoint is not None else None
    out = prepare_output_dir(out)

    generator = torch.Generator().manual_seed(seed)
    photos = load_photos()
    images = random_crops(photos, crops, crop_size, generator)
    split = torch.randperm(crops, generator=generator)
    test_count = max(1, round(crops * TEST_FRACTION))
    test_images, train_images = images[split[:test_count]], images[split[test_count:]]

    if resnet_layer is not None:
        layer = resnet_layer
        layer_description = (
            f"ResNet-50 conv1 -> bn1 (eval) -> ReLU from the checkpoint {str(resnet50_checkpoint)!r}"
        )
    else:
        layer = filter_bank_first_layer(imagenet_normalise(train_images))
        layer_description = (
            "a fixed filter bank of 64 7x7 filters (48 luminance Gabors, 4 difference-of-Gaussians, "
            "8 colour-opponent and 4 luminance Gaussian blobs; see the module docstring) -> "
            "per-channel standardisation over the training crops -> ReLU, standing in for a "
            "pretrained ResNet-50 conv1 (pass --resnet50-checkpoint to use one)"
        )
    train_features = extract_features(layer, train_images)
    test_features = extract_features(layer, test_images)
    train_vectors, test_vectors = pixel_vectors(train_features), pixel_vectors(test_features)

    rows, models = [], {}
    for group_size in group_sizes:
        torch.manual_seed(seed)  # the positive row-normalised init of R_j/P_j is random
        model = TransferAutoencoder(CHANNELS, group_size=group_size, coarsest=coarsest)
        untrained_test = reconstruction_mse(model, test_vectors)
        batches = torch.Generator().manual_seed(seed)  # every s_g sees the same mini-batches
        train_autoencoder(
            model, train_vectors, steps=steps, batch_size=batch_size, generator=batches, description=f"s_g={group_size}"
        )
        in_paper = coarsest == PAPER_COARSEST and group_size in PAPER_TABLE1
        paper_mse, paper_params = PAPER_TABLE1[group_size] if in_paper else ("n/a", "n/a")
        rows.append(
            {
                "s_g": group_size,
                "paper MSE (1e-3)": paper_mse,
                "measured test MSE (1e-3)": 1e3 * reconstruction_mse(model, test_vectors),
                "measured train MSE (1e-3)": 1e3 * reconstruction_mse(model, train_vectors),
                "untrained test MSE (1e-3)": 1e3 * untrained_test,
                "paper params [K]": paper_params,
                "measured params": sum(p.numel() for p in model.parameters()),
                "groups of R_j": "/".join(str(g) for g in model.groups[:-1]),
            }
        )
        models[group_size] = model
        print(
            f"s_g={group_size}: test MSE {rows[-1]['measured test MSE (1e-3)']:.4g}e-3 "
            f"(untrained {rows[-1]['untrained test MSE (1e-3)']:.4g}e-3)",
            flush=True,
        )

    widths = next(iter(models.values())).widths
    photo_names = ", ".join(name for name, _ in photos)
    feature_size = train_features.shape[-1]
    notes = [
        f"First layer: {layer_description}.",
        f"Data: {crops} random {crop_size}x{crop_size} crops ({len(train_images)} train / {len(test_images)} test, "
        f"seed {seed}) from {len(photos)} scikit-image photos ({photo_names}), ImageNet-normalised, giving "
        f"{CHANNELS}x{feature_size}x{feature_size} feature maps.",
        f"Operators: R_j and P_j of MGICBlock({CHANNELS}, identity, MGICConfig(group_size=s_g, coarsest={coarsest})) "
        f"(widths {'-'.join(map(str, widths))}, average init); encoder R_0..R_{len(widths) - 2}, decoder "
        f"P_{len(widths) - 2}..P_0, no level blocks, norms or skips. Adam (lr {LEARNING_RATE:g}, betas {ADAM_BETAS}, "
        f"{WARMUP_FRACTION:.0%} warm-up, cosine decay over the last third), {steps} steps of {batch_size} pixel "
        "vectors; MSE is the mean over all feature elements.",
        f"Lower bound: no linear map through {widths[-1]} channels reconstructs the training features better than "
        f"{1e3 * best_linear_mse(train_vectors, widths[-1]):.4g}e-3 (uncentred PCA); grouping can only add to it.",
        "The paper's MSE comes from 1,024 ImageNet images through a pretrained ResNet-50 conv1; these features "
        "differ in content and scale, so compare the trend over s_g, not absolute values. "
        "Parameter counts are independent of the data and should match.",
    ]
    if coarsest != PAPER_COARSEST:
        notes.append(f"The paper reports s_c = {PAPER_COARSEST} only; its columns are n/a at s_c = {coarsest}.")
    title = f"Feature-map reconstruction MSE vs s_g (s_c = {coarsest})"
    write_table(rows, out, "reconstruction", title=title, notes=notes)
    _plot_figure(out / "reconstruction.png", test_images, test_features, models, coarsest)
    return rows


def _montage(maps: Tensor, columns: int, low: Tensor, high: Tensor) -> np.ndarray:
    """Tile ``maps`` (``[C, H, W]``) in a grid of ``columns``, each map scaled by its own
    ``low``/``high`` to ``[0, 1]``; gaps are NaN so they render as background."""
    channels, height, width = maps.shape
    scaled = ((maps - low.view(-1, 1, 1)) / (high - low).clamp_min(1e-8).view(-1, 1, 1)).clamp(0, 1)
    rows = math.ceil(channels / columns)
    canvas = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan)
    for index, tile in enumerate(scaled.numpy()):
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        canvas[top : top + height, left : left + width] = tile
    return canvas


def _plot_figure(
    path: Path, test_images: Tensor, test_features: Tensor, models: dict[int, TransferAutoencoder], coarsest: int
) -> None:
    """Fig. 2: top, an input crop, one feature map and its reconstruction for every ``s_g``;
    bottom, 16 feature maps, the coarsest representation and the reconstruction at ``s_g = 8``
    (or the middle group size when 8 was not run)."""
    # Show the test crop and channels with the most structure: flat maps say nothing.
    sample = int(test_features.var(dim=(1, 2, 3)).argmax())
    features = test_features[sample]
    channel_variance = features.var(dim=(1, 2))
    channel = int(channel_variance.argmax())
    shown_channels = channel_variance.topk(min(16, CHANNELS)).indices.sort().values
    group_sizes = list(models)
    bottom_group_size = 8 if 8 in models else sorted(group_sizes)[len(group_sizes) // 2]

    with torch.no_grad():
        reconstructions = {g: model(features.unsqueeze(0))[0] for g, model in models.items()}
        coarse = models[bottom_group_size].encode(features.unsqueeze(0))[0]

    top_panels = 2 + len(group_sizes)
    figure = Figure(figsize=(2.2 * max(top_panels, 6), 6.2), layout="constrained")
    grid = figure.add_gridspec(2, 1, height_ratios=(1, 1.3))
    top = grid[0].subgridspec(1, top_panels).subplots()
    bottom = grid[1].subgridspec(1, 3).subplots()

    top[0].imshow(test_images[sample].permute(1, 2, 0).numpy())
    top[0].set_title("input crop")
    low, high = float(features[channel].min()), float(features[channel].max())
    top[1].imshow(features[channel].numpy(), cmap="gray", vmin=low, vmax=high)
    top[1].set_title(f"feature map #{channel}")
    for axis, group_size in zip(top[2:], group_sizes):
        axis.imshow(reconstructions[group_size][channel].numpy(), cmap="gray", vmin=low, vmax=high)
        axis.set_title(f"s_g = {group_size}")

    chosen = features[shown_channels]
    chosen_low, chosen_high = chosen.amin(dim=(1, 2)), chosen.amax(dim=(1, 2))
    panels = (
        (f"{len(shown_channels)} input feature maps", _montage(chosen, 4, chosen_low, chosen_high)),
        (
            f"coarsest level ({coarse.shape[0]} channels)",
            _montage(coarse, 4, coarse.amin(dim=(1, 2)), coarse.amax(dim=(1, 2))),
        ),
        (
            f"reconstruction (s_g = {bottom_group_size})",
            _montage(reconstructions[bottom_group_size][shown_channels], 4, chosen_low, chosen_high),
        ),
    )
    for axis, (title, canvas) in zip(bottom, panels):
        axis.imshow(canvas, cmap="gray", vmin=0, vmax=1)
        axis.set_title(title)
    for axis in (*top, *bottom):
        axis.set_axis_off()
    figure.suptitle(f"Feature maps encoded to the coarsest level and decoded (s_c = {coarsest})")
    figure.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def option(name: str, help_text: str, **kwargs) -> None:
        parser.add_argument(name, help=f"{help_text} (default: %(default)s)", **kwargs)

    option("--out", "output folder", default="outputs/reconstruction")
    option("--group-sizes", "s_g values", type=int, nargs="+", default=list(DEFAULT_GROUP_SIZES))
    option("--coarsest", "s_c", type=int, default=DEFAULT_COARSEST)
    option("--steps", "Adam steps per s_g", type=int, default=DEFAULT_STEPS)
    option("--crops", "image crops, a quarter held out for testing", type=int, default=DEFAULT_CROPS)
    option("--crop-size", "crop side in pixels", type=int, default=DEFAULT_CROP_SIZE)
    option("--batch-size", "pixel feature vectors per step", type=int, default=DEFAULT_BATCH_SIZE)
    option("--seed", "seed for crops, init and batches", type=int, default=0)
    option(
        "--resnet50-checkpoint",
        "torchvision ResNet-50 state_dict whose conv1/bn1 replace the built-in filter bank",
        default=None,
        metavar="PATH",
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    reconstruction_experiment(
        args.out,
        group_sizes=args.group_sizes,
        coarsest=args.coarsest,
        steps=args.steps,
        crops=args.crops,
        crop_size=args.crop_size,
        batch_size=args.batch_size,
        seed=args.seed,
        resnet50_checkpoint=args.resnet50_checkpoint,
    )
    out = Path(args.out)
    print(f"\n{(out / 'reconstruction.md').read_text()}")
    print(
        f"wrote {out / 'reconstruction.md'}, {out / 'reconstruction.csv'}, {out / 'reconstruction.png'} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0
