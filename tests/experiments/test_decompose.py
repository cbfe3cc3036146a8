import pytest
import torch

from mgic_geo.cli import main
from mgic_geo.complexity import profile
from mgic_geo.experiments.decompose import decompose_model
from mgic_geo.models import create_model


@pytest.mark.parametrize("name, size, kwargs", [
    ("mgic_resnet56", (32, 32), {"mgic": {"group_size": 16, "coarsest": 32}}),
    ("resnet56", (32, 32), {}),
    ("mgic_mobilenetv3_large", (64, 64), {"width_mult": 0.6}),
])
def test_rows_add_up_to_the_profile(name, size, kwargs):
    rows = decompose_model(name, size=size, classes=10, kwargs=kwargs)
    total = rows[-1]
    assert total["stage"] == "total"
    assert sum(r["macs"] for r in rows[:-1]) == total["macs"] and sum(r["params"] for r in rows[:-1]) == total["params"]
    with torch.device("meta"):
        measured = profile(create_model(name, num_classes=10, **kwargs), torch.empty(1, 3, *size))
    assert (total["params"], total["macs"]) == (measured.params, measured.macs)
    assert (total["knn_macs"], total["graph_operator_macs"]) == (measured.knn_macs, measured.graph_operator_macs)


def test_total_row_holds_the_graph_macs_the_profile_reports_apart():
    total = decompose_model("mgic_diffgcn", classes=10)[-1]
    cloud = torch.randn(1024, 3, generator=torch.Generator().manual_seed(0))
    measured = profile(create_model("mgic_diffgcn", num_classes=10), cloud)
    assert measured.graph_operator_macs > 0 and measured.knn_macs > 0
    assert (total["params"], total["macs"], total["knn_macs"], total["graph_operator_macs"]) == \
        (measured.params, measured.macs, measured.knn_macs, measured.graph_operator_macs)


def test_roles_show_where_an_mgic_resnet56_spends_its_macs():
    rows = {(r["stage"], r["role"]): r for r in decompose_model("mgic_resnet56", size=(32, 32), classes=10)}
    # with the paper's level rule the 16-wide first stage (< 2 s_c) is one fully coupled level
    assert ("stage 0", "coarsest block") in rows and ("stage 0", "level 0 block") not in rows
    assert {("stage 1", "transition"), ("stage 2", "level 1 block"), ("stage 2", "restriction")} <= set(rows)
    official = {(r["stage"], r["role"]) for r in decompose_model("mgic_resnet56", size=(32, 32), classes=10,
                                                                 level_rule="official")}
    assert ("stage 0", "level 0 block") in official  # the authors' rule always coarsens once


def test_cli_prints_both_rules_and_refuses_a_rule_for_a_plain_network(tmp_path, capsys):
    assert main(["experiment", "decompose", "--model", "mgic_resnet56", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "| total |  | 310330 | 75.9 | 301690 | 66.47 |" in text
    with pytest.raises(ValueError, match="--level-rule: model 'resnet56' has no MGIC blocks"):
        decompose_model("resnet56", size=(32, 32), classes=10, level_rule="official")
    assert main(["experiment", "decompose", "--model", "mgic_resnet56", "--mgic", "{s_g: 8}", "--out", str(tmp_path)]) == 2
    assert "--mgic: not JSON" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["mgic_diffgcn", "diffgcn", "dgcnn", "mgic_diffgcn_dgcnn"])
def test_point_cloud_rows_add_up_to_the_profile(name):
    rows = decompose_model(name, points=256)
    total = rows[-1]
    assert sum(r["macs"] for r in rows[:-1]) == total["macs"]
    generator = torch.Generator().manual_seed(0)
    measured = profile(create_model(name, num_classes=10), torch.randn(256, 3, generator=generator))
    assert (total["params"], total["macs"]) == (measured.params, measured.macs)  # kNN and graph operators apart


def test_point_cloud_roles():
    roles = {(r["stage"], r["role"]) for r in decompose_model("mgic_diffgcn", points=256)}
    assert {("stem", "stem"), ("stage 1", "widening map"), ("stage 3", "level 3 block"),
            ("stage 3", "coarsest block"), ("head", "classifier")} <= roles
