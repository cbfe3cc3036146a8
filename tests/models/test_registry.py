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


MGIC_MODELS = [name for name in list_models() if "mgic" in name]


@pytest.mark.parametrize("name", MGIC_MODELS)
def test_every_mgic_builder_records_its_default_config_and_starts_corrections_at_zero(name):
    from mgic_geo import MGICBlock, MGICConfig
    from mgic_geo.models.registry import model_builder

    assert isinstance(model_builder(name).default_mgic, MGICConfig)
    blocks = [m for m in create_model(name).modules() if isinstance(m, MGICBlock)]
    assert blocks and all(block.mgic.zero_init_correction for block in blocks)
    assert all(float(norm.weight.detach().abs().sum()) == 0 for block in blocks for norm in block.norms)


def test_legacy_mgic_arguments_fold_into_the_config():
    from mgic_geo.complexity import count_parameters
    from mgic_geo.models.registry import fold_legacy_mgic, model_builder

    legacy = create_model("mgic_resnet56", group_size=16, coarsest=32)
    typed = create_model("mgic_resnet56", mgic={"group_size": 16, "coarsest": 32})
    assert count_parameters(legacy) == count_parameters(typed)
    builder = model_builder("mgic_diffgcn")
    assert fold_legacy_mgic(builder, {"k": 10, "group_size": 8, "mgic": {"coarsest": 32}}) == {
        "k": 10, "mgic": {"group_size": 8, "coarsest": 32}}
    assert fold_legacy_mgic(model_builder("resnet56"), {"num_classes": 10}) == {"num_classes": 10}
    with pytest.raises(ValueError, match=r"model 'resnet56' takes no argument\(s\) 'group_size'"):
        create_model("resnet56", group_size=8)
    with pytest.raises(ValueError, match="either as `mgic` or as 'coarsest', not both"):
        from mgic_geo import MGICConfig

        create_model("mgic_diffgcn", coarsest=8, mgic=MGICConfig())


def test_effective_mgic_completes_a_mapping_with_the_builders_default():
    from mgic_geo import MGICConfig
    from mgic_geo.models.registry import effective_mgic, model_builder

    builder = model_builder("mgic_mobilenetv3_large")
    assert effective_mgic(builder, {"level_rule": "official"}) == MGICConfig(64, 64, "official")
    assert effective_mgic(builder, None) == MGICConfig(64, 64)
