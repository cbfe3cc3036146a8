import pytest
from torch import nn

from mgic_geo.models import create_model, list_models, register_model
from mgic_geo.models.registry import _BUILDERS

POINT_CLOUD_MODELS = ["dgcnn", "dgcnn_pyg_example", "diffgcn", "mgic_dgcnn", "mgic_diffgcn"]


def test_lists_the_point_cloud_models():
    assert set(POINT_CLOUD_MODELS) <= set(list_models())
    assert list_models("*diffgcn") == ["diffgcn", "mgic_diffgcn"]


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown model 'pointnet'; available: .*mgic_diffgcn"):
        create_model("pointnet")


def test_unknown_argument_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"model 'dgcnn' takes no argument\(s\) 'widht'; it takes: num_classes, k"):
        create_model("dgcnn", widht=3)


def test_register_refuses_a_duplicate_name():
    def dgcnn():
        return nn.Identity()

    with pytest.raises(ValueError, match="a model named 'dgcnn' is already registered"):
        register_model(dgcnn)
    assert _BUILDERS["dgcnn"] is not dgcnn
