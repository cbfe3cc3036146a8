"""ModelNet-10 point clouds for Lightning: one datamodule over three sources (``.off`` meshes,
point-cloud files, generated stand-in meshes), the readers and transforms behind it.

See :class:`ModelNet10DataModule` and ``datasets/README.md`` for the layouts.
"""
from mgic_geo.data.cifar10_archive import read_cifar10_archive
from mgic_geo.data.image_files import load_image
from mgic_geo.data.image_synthetic import write_synthetic_image_folder
from mgic_geo.data.images import CIFAR10DataModule, ImageFolderDataModule
from mgic_geo.data.layout import CLASSES, Layout, download_modelnet10, find_layout
from mgic_geo.data.modelnet import ModelNet10DataModule, ModelNetShapes
from mgic_geo.data.readers import read_mesh, read_points, read_shape
from mgic_geo.data.segmentation import SegmentationFolderDataModule
from mgic_geo.data.shape_cache import ShapeCache
from mgic_geo.data.synthetic import write_synthetic_modelnet
from mgic_geo.data.transforms import (
    NormalizeUnitSphere,
    RandomAnisotropicScale,
    RandomShift,
    ShufflePoints,
    dgcnn_augmentation,
)

__all__ = [
    "CLASSES", "ModelNet10DataModule", "write_synthetic_modelnet", "ModelNetShapes", "ShapeCache", "Layout",
    "find_layout", "download_modelnet10", "read_mesh", "read_points", "read_shape", "NormalizeUnitSphere",
    "RandomAnisotropicScale", "RandomShift", "ShufflePoints", "dgcnn_augmentation",
    "CIFAR10DataModule", "ImageFolderDataModule", "SegmentationFolderDataModule", "write_synthetic_image_folder",
    "load_image", "read_cifar10_archive",
]
