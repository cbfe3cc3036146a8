"""Image tasks: ImageClassifier and ImageSegmenter (recipe, schedules, channels_last, errors), the
shipped CIFAR-10 / ImageNet / Cityscapes configs, and tiny `mgic-geo fit` + `test` runs on generated
images that must beat chance. All outputs go to tmp_path."""
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mgic_geo.cli import main
from mgic_geo.experiments.image_tables import RESULTS, TABLES
from mgic_geo.training.cli import automatic_precision, results_folder_name
from mgic_geo.training.images import ImageClassifier, ImageSegmenter

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
IMAGE_CONFIGS = sorted(p for folder in ("cifar10", "imagenet", "cityscapes") for p in (EXPERIMENTS / folder).glob("*.yaml"))


def test_classifier_defaults_are_the_papers_image_recipe():
    module = ImageClassifier(model="resnet56")
    hp = module.hparams
    recipe = (hp.optimizer, hp.momentum, hp.weight_decay, hp.scheduler, hp.step_size, hp.gamma)
    assert recipe == ("sgd", 0.9, 1e-4, "step", 30, 0.1)
    assert hp.label_smoothing == 0.0 and hp.channels_last is None
    assert module.num_parameters == 855_770  # plain ResNet-56, as pinned in tests/models
    assert ImageClassifier(**hp).num_parameters == module.num_parameters  # hparams rebuild the network


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    module = ImageClassifier(model="mgic_resnet56", model_kwargs={"group_size": 8, "coarsest": 16}).eval()
    expected = module(images)
    module._use_channels_last = True
    module.net.to(memory_format=torch.channels_last)
    assert module._images(images).is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(module(images), expected, atol=1e-5)


def test_segmenter_returns_pixel_logits():
    module = ImageSegmenter(model="lraspp_mgic_mobilenetv3_small", num_classes=3).eval()
    assert module(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)  # torchvision's {"out": ...} unwrapped
    assert (module.hparams.scheduler, module.hparams.power, module.hparams.lr) == ("poly", 0.9, 0.007)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"model 'dgcnn' is a network for point cloud classification, not image "
                                         r"classification; choose one of: .*mgic_resnet56"):
        ImageClassifier(model="dgcnn")
    with pytest.raises(ValueError, match=r"model 'resnet56' is a network for image classification, not semantic "
                                         r"segmentation; choose one of: lraspp_mgic_mobilenetv3_large"):
        ImageSegmenter(model="resnet56")
    with pytest.raises(ValueError, match=r"unknown scheduler 'linear'; choose one of: cosine, step, poly, none"):
        ImageClassifier(model="resnet56", scheduler="linear")
    with pytest.raises(ValueError, match=r"`step_size` must be a positive number of epochs, got 0"):
        ImageClassifier(model="resnet56", step_size=0)
    with pytest.raises(ValueError, match=r"`gamma` must be in \(0, 1\], got 2"):
        ImageClassifier(model="resnet56", gamma=2)
    with pytest.raises(ValueError, match=r"`channels_last` must be true, false or null"):
        ImageClassifier(model="resnet56", channels_last="yes")
    with pytest.raises(ValueError, match=r"`label_smoothing` must be in \[0, 1\), got 1.5"):
        ImageClassifier(model="resnet56", label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"`ignore_index` must be an integer outside 0..18"):
        ImageSegmenter(num_classes=19, ignore_index=3)


def test_results_folder_and_automatic_precision():
    assert results_folder_name("mgic_geo.data.CIFAR10DataModule") == "cifar10"
    assert results_folder_name("mgic_geo.data.ModelNet10DataModule") == "modelnet10"
    assert automatic_precision("cpu") == "32-true"
    if not torch.cuda.is_available():
        assert automatic_precision("auto") == "32-true"


def _init_args(config: dict, section: str) -> tuple[type, dict]:
    module_name, class_name = config[section]["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module_name), class_name), dict(config[section]["init_args"])


@pytest.mark.parametrize("path", IMAGE_CONFIGS, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_shipped_image_configs_build_and_carry_the_papers_recipe(path):
    config = yaml.safe_load(path.read_text())
    task_class, model_args = _init_args(config, "model")
    data_class, data_args = _init_args(config, "data")
    data = data_class(**data_args)  # nothing is read before setup
    dataset = path.parent.name
    if path.stem == "demo":
        assert data_args["source"] == "synthetic" and config["trainer"]["default_root_dir"].startswith("outputs/demo/")
        return
    assert config["trainer"]["default_root_dir"] == f"outputs/{dataset}/{path.stem}"
    assert config["trainer"]["precision"] is None  # AMP on CUDA, fp32 elsewhere
    assert (model_args["optimizer"], model_args["momentum"], model_args["weight_decay"]) == ("sgd", 0.9, 1e-4)
    if dataset == "cityscapes":
        assert task_class is ImageSegmenter and data.num_classes == model_args["num_classes"] == 19
        assert (model_args["scheduler"], model_args["power"], model_args["lr"]) == ("poly", 0.9, 0.007)
        assert config["trainer"]["max_steps"] == 90_000 and data_args["crop_size"] == 769
    else:
        assert task_class is ImageClassifier
        assert config["trainer"]["max_epochs"] == 180
        assert (model_args["scheduler"], model_args["step_size"], model_args["gamma"]) == ("step", 30, 0.1)
        expected = {"cifar10": (0.001, 128, 10), "imagenet": (0.1, 256, 1000)}[dataset]
        assert (model_args["lr"], data_args["batch_size"], model_args["num_classes"]) == expected
    with torch.device("meta"):  # the network builds (shapes only)
        task_class(**model_args)


def test_every_image_table_row_has_a_config_writing_where_the_table_reads():
    configs = [yaml.safe_load(path.read_text()) for path in IMAGE_CONFIGS if path.stem != "demo"]
    for table, (_, _, _, _, rows) in TABLES.items():
        for label, model, kwargs, *_ in rows:
            matching = [c for c in configs if c["model"]["init_args"]["model"] == model
                        and all(c["model"]["init_args"]["model_kwargs"].get(k) == v for k, v in kwargs.items())
                        and c["trainer"]["default_root_dir"].startswith(RESULTS[table] + "/")]
            assert matching, f"table {table}, row {label!r}: no config"


def write_config(path: Path, tmp_path: Path, model: dict, data: dict, **trainer) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"default_root_dir": str(tmp_path / "run"), "accelerator": "cpu", "devices": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 5, **trainer},
        "model": model,
        "data": data,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_tiny_cifar_style_fit_beats_chance(tmp_path, restore_env, capsys):
    config = write_config(tmp_path / "tiny.yaml", tmp_path, max_epochs=6, model={
        "class_path": "mgic_geo.training.ImageClassifier",
        "init_args": {"model": "mgic_resnet56", "model_kwargs": {"group_size": 8, "coarsest": 16},
                      "optimizer": "adam", "lr": 0.003, "scheduler": "cosine", "min_lr": 0.0001, "weight_decay": 0.0},
    }, data={
        "class_path": "mgic_geo.data.CIFAR10DataModule",
        "init_args": {"root": str(tmp_path / "images"), "source": "synthetic", "synthetic_images": [40, 10],
                      "batch_size": 32, "image_size": 16},
    })
    assert main(["fit", "--config", str(config)]) == 0
    assert main(["test", "--config", str(config), "--ckpt_path", "last"]) == 0
    capsys.readouterr()
    results = json.loads((tmp_path / "run" / "logs" / "version_1" / "test_results.json").read_text())
    assert results["task"] == "ImageClassifier" and results["model"] == "mgic_resnet56"
    assert results["num_test_samples"] == 100 and results["epochs"] == 6 and results["precision"] == "32-true"
    assert results["top1_accuracy"] >= 0.3, results  # chance: 0.1
    assert results["top5_accuracy"] >= results["top1_accuracy"]
    assert sorted(results["per_class_accuracy"]) == sorted(p.name for p in (tmp_path / "images" / "test").iterdir())


def write_segmentation(root: Path, count: int, size: int = 64) -> None:
    """A bright square (class 1) on a dark background (class 0); a band of ignored pixels (255)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", 4)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((size, size), np.uint8)
            x, y = rng.integers(0, size // 2, 2)
            mask[y:y + size // 2, x:x + size // 2] = 1
            mask[:2] = 255
            image = np.where(mask[..., None] == 1, 200, 40) + rng.integers(0, 30, (size, size, 3))
            Image.fromarray(image.astype(np.uint8)).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")


def test_tiny_segmentation_fit_beats_a_constant_prediction(tmp_path, restore_env, capsys):
    write_segmentation(tmp_path / "seg", count=32)
    # bn_momentum 0.1 instead of MobileNetV3's 0.01: after these 80 steps the running statistics of
    # 0.01 are still mostly their initial values, and evaluation (which uses them) predicts one class
    config = write_config(tmp_path / "seg.yaml", tmp_path, max_epochs=10, model={
        "class_path": "mgic_geo.training.ImageSegmenter",
        "init_args": {"model": "lraspp_mgic_mobilenetv3_small", "model_kwargs": {"bn_momentum": 0.1}, "num_classes": 2,
                      "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0},
    }, data={
        "class_path": "mgic_geo.data.SegmentationFolderDataModule",
        "init_args": {"root": str(tmp_path / "seg"), "num_classes": 2, "batch_size": 4, "crop_size": 64,
                      "scale_range": [1.0, 1.0]},
    })
    assert main(["fit", "--config", str(config)]) == 0
    assert main(["test", "--config", str(config), "--ckpt_path", "last"]) == 0
    capsys.readouterr()
    results = json.loads((tmp_path / "run" / "logs" / "version_1" / "test_results.json").read_text())
    assert results["task"] == "ImageSegmenter" and set(results["per_class_iou"]) == {"0", "1"}
    # all background: IoU 0.75 for class 0 and 0 for class 1, a mean of 0.375
    assert results["mean_iou"] >= 0.6, results
    assert results["pixel_accuracy"] >= 0.8, results


def test_model_of_another_task_is_a_one_line_error(tmp_path, restore_env, capsys):
    config = write_config(tmp_path / "bad.yaml", tmp_path, max_epochs=1, model={
        "class_path": "mgic_geo.training.ImageClassifier", "init_args": {"model": "mgic_diffgcn"},
    }, data={
        "class_path": "mgic_geo.data.CIFAR10DataModule",
        "init_args": {"root": str(tmp_path / "images"), "source": "synthetic", "synthetic_images": [1, 1]},
    })
    assert main(["fit", "--config", str(config)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mgic-geo: error:")]
    assert err and err[0].startswith("mgic-geo: error: model 'mgic_diffgcn' is a network for point cloud classification")
    assert not (tmp_path / "run").exists()
