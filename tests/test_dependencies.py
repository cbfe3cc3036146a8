"""The set-up (``make test``) leaves every declared dependency importable, open3d included (it needs
the system's libusb-1.0, which the Makefile installs)."""
import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    ["torch", "torchvision", "torch_geometric", "lightning", "torchmetrics", "jsonargparse", "tensorboard", "matplotlib",
     "skimage", "open3d"],
)
def test_dependency_imports(module):
    importlib.import_module(module)


def test_open3d_reads_a_point_cloud(tmp_path):
    import open3d

    path = tmp_path / "cloud.xyz"
    path.write_text("0 0 0\n1 0 0\n0 1 0\n")
    assert len(open3d.io.read_point_cloud(str(path)).points) == 3
