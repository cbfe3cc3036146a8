"""The feature maps of Table 1 (``mgic-geo experiment reconstruction``): photos, crops and a
64-filter first layer.

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

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

CHANNELS = 64
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
        from mgic_geo.state_checks import load_error_message  # the one message, without torch's advice

        reason = load_error_message(path, error, kind="state_dict file", plural="state_dict files")[len(f"{path}: "):]
        raise ValueError(f"`--resnet50-checkpoint` {str(path)!r} could not be read as a state_dict: {reason}") from None
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
