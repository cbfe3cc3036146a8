"""PointCloudClassifier and test_results.json without a Trainer run: recipe, loss, schedule, errors."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from mgic_geo.training import collect_test_results
from mgic_geo.training.module import PointCloudClassifier, epochs_in_checkpoint


def test_defaults_are_dgcnn_recipe_and_hparams_rebuild_the_model():
    module = PointCloudClassifier(model="dgcnn", model_kwargs={"k": 10})
    hp = module.hparams
    assert (hp.optimizer, hp.lr, hp.min_lr, hp.momentum, hp.weight_decay, hp.label_smoothing) == ("sgd", 0.1, 1e-3, 0.9, 1e-4, 0.2)
    copy = PointCloudClassifier(**hp)
    assert copy.num_parameters == module.num_parameters > 0
    pos, batch = torch.randn(2 * 64, 3), torch.arange(2).repeat_interleave(64)
    assert module.eval()(pos, batch).shape == (2, 10)


def test_unknown_names_are_errors_listing_the_choices():
    from mgic_geo.models import list_models

    with pytest.raises(ValueError, match="unknown model 'pointnet'; available models: ") as error:
        PointCloudClassifier(model="pointnet")
    assert all(name in str(error.value) for name in list_models())
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; choose one of: sgd, adam"):
        PointCloudClassifier(model="dgcnn", optimizer="rmsprop")
    with pytest.raises(ValueError, match="label_smoothing"):
        PointCloudClassifier(model="dgcnn", label_smoothing=1.0)


def test_label_smoothing_is_dgcnns_cal_loss():
    torch.manual_seed(0)
    logits, target, eps, classes = torch.randn(6, 10), torch.randint(0, 10, (6,)), 0.2, 10
    one_hot = F.one_hot(target, classes).float()
    smoothed = one_hot * (1 - eps) + (1 - one_hot) * eps / (classes - 1)  # DGCNN's cal_loss
    expected = -(smoothed * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    module = PointCloudClassifier(model="dgcnn", label_smoothing=eps)
    actual = F.cross_entropy(logits, target, label_smoothing=module._torch_smoothing)
    assert torch.allclose(actual, expected, atol=1e-6)


def test_epochs_in_checkpoint():
    loops = {"fit_loop": {"epoch_progress": {"current": {"processed": 3, "completed": 2}}}}
    assert epochs_in_checkpoint({"loops": loops, "epoch": 2}) == 3
    assert epochs_in_checkpoint({"epoch": 4}) == 5
    assert epochs_in_checkpoint({}) is None


def test_collect_test_results_finds_every_run_oldest_first(tmp_path):
    for name, date in (("b", "2026-01-02T00:00:00+00:00"), ("a", "2026-01-03T00:00:00+00:00")):
        folder = tmp_path / name / "logs" / "version_0"
        folder.mkdir(parents=True)
        (folder / "test_results.json").write_text(json.dumps({"model": name, "date": date}))
    (tmp_path / "c.json").write_text("{}")
    records = collect_test_results(tmp_path)
    assert [r["model"] for r in records] == ["b", "a"]
    assert records[0]["path"].endswith("b/logs/version_0/test_results.json")
    assert collect_test_results(tmp_path / "missing") == []


CONFIGS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "modelnet10").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_shipped_configs_build_their_model_and_data(path):
    from mgic_geo.data import ModelNet10DataModule

    config = yaml.safe_load(path.read_text())
    assert config["model"]["class_path"] == "mgic_geo.training.PointCloudClassifier"
    assert config["data"]["class_path"] == "mgic_geo.data.ModelNet10DataModule"
    config["model"], config["data"] = config["model"]["init_args"], config["data"]["init_args"]
    module = PointCloudClassifier(**config["model"])
    data = ModelNet10DataModule(**config["data"])
    assert data.num_classes == module.num_classes == 10
    if path.stem == "demo":
        assert config["data"]["source"] == "synthetic"
        assert not config["trainer"]["default_root_dir"].startswith("outputs/modelnet10")  # kept out of table 6
    elif path.stem == "mgic_diffgcn_cpu":  # the CPU recipe: the Table-6 network, a 30-minute budget
        assert config["model"]["model"] == "mgic_diffgcn" and config["model"]["optimizer"] == "adam"
        assert config["trainer"]["max_time"] == "00:00:30:00" and config["data"]["val_fraction"] == 0.1
        assert config["data"]["num_points"] == 1024 and config["model"]["model_kwargs"]["k"] == 10
    else:  # the paper's setting and DGCNN's recipe
        assert path.stem == config["model"]["model"]
        assert config["trainer"]["default_root_dir"] == f"outputs/modelnet10/{path.stem}"
        assert config["data"]["num_points"] == 1024 and config["data"]["batch_size"] == 32
        assert config["trainer"]["max_epochs"] == 250 and config["model"]["optimizer"] == "sgd"
        assert config["model"]["model_kwargs"]["k"] == (20 if path.stem == "dgcnn_pyg_example" else 10)


def test_every_point_cloud_model_has_a_config():
    from mgic_geo.models import list_models

    point_cloud_models = {"dgcnn", "diffgcn", "mgic_diffgcn", "mgic_dgcnn", "dgcnn_pyg_example"}
    assert point_cloud_models <= set(list_models())
    assert point_cloud_models <= {path.stem for path in CONFIGS}
