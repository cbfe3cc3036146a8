"""Table 1 / Fig. 2 of the paper: how much of a 64-channel feature map survives the trip down the
channel hierarchy to the coarsest level and back (``mgic-geo experiment reconstruction``).

The transfer operators are studied in isolation, as in Sec. 5.1: the operators of
``MGICBlock(64, identity, group_size=s_g, coarsest=s_c)`` are taken as they are, the encoder applies
the restrictions ``R_0 .. R_{L-1}`` in order and the decoder the prolongations ``P_{L-1} .. P_0``
(no level blocks, no normalisations, no skip connections). Each ``s_g`` gets its own operators,
trained with Adam to minimise the reconstruction MSE of the feature maps.

Data. The paper encodes the conv1 feature maps of a pretrained ResNet-50 on 1,024 ImageNet images;
neither is available offline here. Instead, seeded random crops are cut from photos that ship
inside scikit-image (:data:`PHOTOS`), ImageNet-normalised and passed through a 64-filter first
layer (7x7, stride 2, padding 3, as ResNet-50's conv1):

* with ``--resnet50-checkpoint PATH`` (a torchvision ResNet-50 ``state_dict``): ``conv1`` ->
  ``bn1`` (eval, running statistics) -> ReLU, exactly the paper's features;
* otherwise a fixed filter bank, described below, followed by a per-channel standardisation whose
  mean and variance are measured on the training crops (the role ``bn1`` plays in ResNet-50) and
  a ReLU.

The filter bank (:func:`gabor_colour_filter_bank`) is deterministic and mimics what a trained conv1
learns: oriented edges and bars, centre-surround cells and colour blobs. Pixel offsets ``u, v``
run over ``-3 .. 3``; "luminance" filters see ``0.299 R + 0.587 G + 0.114 B`` of the normalised
input (ImageNet's three channel stds are nearly equal, so this is close to true luminance).

* 48 Gabor filters on luminance: 8 orientations ``k pi / 8`` x 3 wavelengths (2.5, 3.5, 5 px,
  Gaussian envelope sigma = 0.4 x wavelength) x 2 phases (even/cosine and odd/sine). A multiple of
  the envelope is subtracted from the even ones so every Gabor has zero response to flat regions.
* 4 luminance difference-of-Gaussians (centre/surround sigma 0.7/1.4 and 1.2/2.4 px, each
  Gaussian normalised to unit sum over the 7x7 support, so zero-mean), ON and OFF.
* 8 colour-opponent Gaussian blobs: red-green ``(R - G) / sqrt 2`` and blue-yellow
  ``(B - (R + G) / 2) / sqrt 1.5`` at sigma 1 and 2 px, both signs.
* 4 luminance Gaussian blobs at sigma 1 and 2 px, both signs (bright and dark regions).

Filters come in sign pairs because the ReLU after the standardisation keeps only one half of each
response; the pair keeps both, as the ON/OFF pairs of a trained conv1 do. Filter scale does not
matter: the standardisation divides it out.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm import tqdm

from mgic_geo.core import MGICBlock
from mgic_geo.experiments.report import prepare_output_dir, write_table
from mgic_geo.validation import check_int

CHANNELS = 64
DEFAULT_GROUP_SIZES = (32, 16, 8, 4)
DEFAULT_COARSEST = 8
DEFAULT_STEPS = 1500
DEFAULT_CROPS = 256
DEFAULT_CROP_SIZE = 96
DEFAULT_BATCH_SIZE = 256  # pixel vectors per step
LEARNING_RATE = 3e-2
ADAM_BETAS = (0.9, 0.99)
WARMUP_FRACTION = 0.05
DECAY_START_FRACTION = 2 / 3
TEST_FRACTION = 0.25

#: Paper Table 1 (s_c = 8): s_g -> (MSE in 1e-3, transfer-operator parameters in K).
PAPER_TABLE1 = {32: (11, 3.3), 16: (13, 1.8), 8: (17, 0.9), 4: (24, 0.4)}
PAPER_COARSEST = 8

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMINANCE = (0.299, 0.587, 0.114)
RED_GREEN = (1 / math.sqrt(2), -1 / math.sqrt(2), 0.0)
BLUE_YELLOW = (-0.5 / math.sqrt(1.5), -0.5 / math.sqrt(1.5), 1 / math.sqrt(1.5))
KERNEL_SIZE = 7

#: scikit-image photos used for the crops; all ship inside the scikit-image wheel (no download).
#: Mostly colour, like ImageNet; the two grayscale ones are repeated to RGB.
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "camera",
    "coins",
)

RESNET50_KEYS = ("conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var")


# --------------------------------------------------------------------------------------------
# Data: photos, crops, first layer
# --------------------------------------------------------------------------------------------


def load_photos() -> list[tuple[str, Tensor]]:
    """The :data:`PHOTOS` as ``(name, image)`` pairs, images ``[3, H, W]`` float in ``[0, 1]``."""
    from skimage import data  # imported here: the CLI imports every command module to build its parser

    photos = []
    for name in PHOTOS:
        # stereo_motorcycle() returns (left, right, disparity); the left view is the photo.
        image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        image = torch.from_numpy(np.ascontiguousarray(image)).float() / 255.0
        image = image.unsqueeze(-1).expand(-1, -1, 3) if image.dim() == 2 else image[..., :3]
        photos.append((name, image.permute(2, 0, 1).contiguous()))
    return photos


def random_crops(photos: list[tuple[str, Tensor]], count: int, size: int, generator: torch.Generator) -> Tensor:
    """``count`` crops of ``size x size`` pixels, ``[count, 3, size, size]``; crop ``i`` comes from
    photo ``i mod len(photos)`` (so every photo is equally represented), at a random position."""
    smallest = min(min(image.shape[1:]) for _, image in photos)
    if size > smallest:
        raise ValueError(f"`--crop-size` {size} is larger than the smallest photo side ({smallest} px)")
    crops = []
    for index in range(count):
        _, image = photos[index % len(photos)]
        top = int(torch.randint(image.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[2] - size + 1, (1,), generator=generator))
        crops.append(image[:, top : top + size, left : left + size])
    return torch.stack(crops)


def imagenet_normalise(images: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _pixel_offsets() -> tuple[Tensor, Tensor]:
    offsets = torch.arange(KERNEL_SIZE, dtype=torch.float64) - KERNEL_SIZE // 2
    return torch.meshgrid(offsets, offsets, indexing="ij")


def _gaussian(sigma: float) -> Tensor:
    """A 7x7 Gaussian normalised to unit sum over the support."""
    rows, cols = _pixel_offsets()
    kernel = torch.exp(-(rows**2 + cols**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _gabor(orientation: float, wavelength: float, phase: float) -> Tensor:
    rows, cols = _pixel_offsets()
    envelope = _gaussian(0.4 * wavelength)
    along = cols * math.cos(orientation) + rows * math.sin(orientation)
    kernel = envelope * torch.cos(2 * math.pi * along / wavelength + phase)
    # Removing the DC response with a multiple of the envelope (not a constant) keeps the filter
    # localised instead of adding a box around it.
    return kernel - envelope * (kernel.sum() / envelope.sum())


def _colour(kernel: Tensor, weights: tuple[float, float, float]) -> Tensor:
    """A ``[3, 7, 7]`` filter applying spatial ``kernel`` to the colour axis ``weights``."""
    return torch.tensor(weights, dtype=kernel.dtype).view(3, 1, 1) * kernel


def gabor_colour_filter_bank() -> Tensor:
    """The fixed ``[64, 3, 7, 7]`` filter bank described in the module docstring."""
    filters = [
        _colour(_gabor(k * math.pi / 8, wavelength, phase), LUMINANCE)
        for k in range(8)
        for wavelength in (2.5, 3.5, 5.0)
        for phase in (0.0, math.pi / 2)
    ]
    for centre, surround in ((0.7, 1.4), (1.2, 2.4)):
        dog = _colour(_gaussian(centre) - _gaussian(surround), LUMINANCE)
        filters += [dog, -dog]
    for axis in (RED_GREEN, BLUE_YELLOW):
        for sigma in (1.0, 2.0):
            blob = _colour(_gaussian(sigma), axis)
            filters += [blob, -blob]
    for sigma in (1.0, 2.0):
        blob = _colour(_gaussian(sigma), LUMINANCE)
        filters += [blob, -blob]
    return torch.stack(filters).float()


def _first_layer(weight: Tensor) -> nn.Sequential:
    conv = nn.Conv2d(3, CHANNELS, KERNEL_SIZE, stride=2, padding=KERNEL_SIZE // 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return nn.Sequential(conv, nn.BatchNorm2d(CHANNELS), nn.ReLU()).eval().requires_grad_(False)


def filter_bank_first_layer(train_images: Tensor) -> nn.Sequential:
    """Filter bank -> per-channel standardisation (statistics of ``train_images``) -> ReLU, as a
    conv/BatchNorm(eval)/ReLU stack so it runs exactly like ResNet-50's first layer."""
    layer = _first_layer(gabor_colour_filter_bank())
    conv, norm = layer[0], layer[1]
    with torch.no_grad():
        responses = torch.cat([conv(chunk) for chunk in train_images.split(256)])
        norm.running_mean.copy_(responses.mean(dim=(0, 2, 3)))
        norm.running_var.copy_(responses.var(dim=(0, 2, 3), unbiased=False))
        norm.weight.fill_(1.0)
        norm.bias.zero_()
    return layer


def resnet50_first_layer(checkpoint: str | Path) -> nn.Sequential:
    """``conv1 -> bn1 (eval) -> ReLU`` of a torchvision ResNet-50 ``state_dict`` file."""
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"`--resnet50-checkpoint` {str(path)!r} does not exist or is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types (pickle, zip, runtime) for a bad file
        raise ValueError(f"`--resnet50-checkpoint` {str(path)!r} could not be read as a state_dict: {error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"`--resnet50-checkpoint` {str(path)!r} holds a {type(state).__name__}, not a state_dict")
    missing = [key for key in RESNET50_KEYS if key not in state]
    if missing:
        raise ValueError(f"`--resnet50-checkpoint` {str(path)!r} lacks the ResNet-50 entries {missing}")
    expected = {key: (CHANNELS,) for key in RESNET50_KEYS}
    expected["conv1.weight"] = (CHANNELS, 3, KERNEL_SIZE, KERNEL_SIZE)
    for key, shape in expected.items():
        if not isinstance(state[key], Tensor) or tuple(state[key].shape) != shape:
            found = tuple(state[key].shape) if isinstance(state[key], Tensor) else type(state[key]).__name__
            raise ValueError(
                f"`--resnet50-checkpoint` {str(path)!r}: {key} should have shape {shape}, found {found}"
            )
    layer = _first_layer(state["conv1.weight"].float())
    norm = layer[1]
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(norm, name).copy_(state[f"bn1.{name}"].float())
    return layer


def extract_features(layer: nn.Module, images: Tensor) -> Tensor:
    """``[N, 64, H/2, W/2]`` feature maps of ImageNet-normalised ``images`` (``[N, 3, H, W]``)."""
    with torch.no_grad():
        return torch.cat([layer(imagenet_normalise(chunk)) for chunk in images.split(256)])


# --------------------------------------------------------------------------------------------
# The transfer operators as an autoencoder
# --------------------------------------------------------------------------------------------


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
        block = MGICBlock(channels, lambda width, groups: nn.Identity(), group_size=group_size, coarsest=coarsest)
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
    ``reconstruction.md``/``.csv`` (the table, see :func:`~mgic_geo.experiments.report.write_table`)
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
        f"Operators: R_j and P_j of MGICBlock({CHANNELS}, identity, group_size=s_g, coarsest={coarsest}) "
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
