"""Released weights (mgic_geo.models.weights, mgic-geo release-weights): a tiny synthetic fit's checkpoint is
released into tmp_path and read back through create_model(weights=...) and `mgic-geo test --ckpt_path`; the
checks refuse a changed file, a pickled payload, non-finite tensors, weights that do not fit, and conflicting
arguments. The shipped files, once the lead adds them, are checked against their metadata."""
import contextlib
import doctest
import fnmatch
import hashlib
import io
import json
import os
import shutil
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import mgic_geo.models.release
import mgic_geo.models.weights
from mgic_geo.cli import main
from mgic_geo.data.layout import CLASSES
from mgic_geo.models import (
    MGICDiffGCN_Weights,
    Weights,
    WeightsError,
    create_model,
    get_model_weights,
    get_weight,
    list_weights,
)
from mgic_geo.models.release import release_weights
from mgic_geo.models.weights import META_KEY, RELEASE_DIR, sha256_of

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO / "experiments" / "modelnet10" / "mgic_diffgcn.yaml"
MODEL_KWARGS = {"k": 10, "group_size": 8, "coarsest": 16, "dropout": 0.5}  # the experiment's
NUM_POINTS = 64
FILE_NAME = MGICDiffGCN_Weights.MODELNET10_V1.path.name


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread, as the subprocesses have


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> SimpleNamespace:
    """A 2-epoch mgic_diffgcn fit on synthetic shapes, its test run, and its release (with the shipped
    file's name, in a folder of its own) by `mgic-geo release-weights`."""
    from mgic_geo.data import write_synthetic_modelnet

    folder = tmp_path_factory.mktemp("release")
    root = write_synthetic_modelnet(folder / "shapes", shapes_per_class=(4, 1), seed=0)
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {"default_root_dir": str(folder / "run"), "max_epochs": 2, "accelerator": "cpu", "devices": 1,
                    "precision": "32-true", "enable_progress_bar": False, "enable_model_summary": False,
                    "log_every_n_steps": 1},
        "model": {"class_path": "mgic_geo.training.PointCloudClassifier", "init_args": {
            "model": "mgic_diffgcn", "model_kwargs": MODEL_KWARGS, "optimizer": "adam", "lr": 0.003,
            "min_lr": 0.0003, "weight_decay": 0.0}},
        "data": {"class_path": "mgic_geo.data.ModelNet10DataModule", "init_args": {
            "root": str(root), "source": "synthetic", "synthetic_shapes": [4, 1], "num_points": NUM_POINTS,
            "batch_size": 8, "augment": True}},
    }))
    extra = folder / "extra.json"
    extra.write_text(json.dumps({"recipe": {"max_epochs": 2}, "notes": "a test release"}))
    out = folder / "released" / FILE_NAME
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:  # what seed_everything puts in os.environ is undone
        for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
            patch.setenv(name, "0")
            patch.delenv(name)
        assert main(["fit", "--config", str(config)]) == 0
        assert main(["test", "--config", str(config), "--ckpt_path", "last"]) == 0
        results = next((folder / "run" / "logs").rglob("test_results.json"))
        checkpoint = folder / "run" / "checkpoints" / "last.ckpt"
        with contextlib.redirect_stdout(printed):
            assert main(["release-weights", "--ckpt", str(checkpoint), "--out", str(out), "--test-results",
                         str(results), "--config", "experiments/modelnet10/mgic_diffgcn.yaml",
                         "--meta-json", str(extra)]) == 0
    return SimpleNamespace(folder=folder, root=root, config=config, checkpoint=checkpoint, results=results, out=out,
                           meta_path=out.with_suffix(".json"), printed=printed.getvalue())


def clouds(count: int = 4, points: int = NUM_POINTS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pos = torch.randn(count * points, 3, generator=generator)
    return pos, torch.arange(count).repeat_interleave(points)


def copy_release(released, folder: Path, name: str = "copy.pt") -> Path:
    """The release file and its metadata copied into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    shutil.copyfile(released.out, target)
    shutil.copyfile(released.meta_path, target.with_suffix(".json"))
    return target


def rewrite(path: Path, payload) -> None:
    """Write ``payload`` to the release file ``path`` and record its new sha256 and size in the metadata (a
    consistent pair: what is refused is then refused for its contents, not its hash)."""
    torch.save(payload, path)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta.update(sha256=sha256_of(path), size=path.stat().st_size)
    meta_path.write_text(json.dumps(meta))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# -- the release file -----------------------------------------------------------------------------
def test_release_file_is_a_stripped_lightning_checkpoint(released):
    original, release = load(released.checkpoint), load(released.out)
    assert {"optimizer_states", "lr_schedulers", "loops", "callbacks", "ModelNet10DataModule"} <= set(original)
    assert set(release) == {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "hparams_name",
                            "hyper_parameters", "datamodule_hparams_name", "datamodule_hyper_parameters", META_KEY}
    assert release["state_dict"].keys() == original["state_dict"].keys()
    assert all(torch.equal(release["state_dict"][k], v) for k, v in original["state_dict"].items())
    assert release["hyper_parameters"] == original["hyper_parameters"]
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        assert release[key] == original[key]
    assert released.out.stat().st_size < released.checkpoint.stat().st_size / 2  # no optimiser moments
    assert not list(released.out.parent.glob(".*partial"))


def test_metadata_records_the_recipe_accuracy_classes_and_hash(released):
    meta = json.loads(released.meta_path.read_text())
    results = json.loads(released.results.read_text())
    network = create_model("mgic_diffgcn", **MODEL_KWARGS)
    assert meta["sha256"] == sha256_of(released.out) == hashlib.sha256(released.out.read_bytes()).hexdigest()
    assert meta["file"] == FILE_NAME and meta["size"] == released.out.stat().st_size
    assert meta["model"] == "mgic_diffgcn" and meta["task"] == "mgic_geo.training.PointCloudClassifier"
    # every builder argument; the checkpoint's top-level group_size/coarsest (as written before
    # MGICConfig) recorded as the whole MGIC setting
    assert meta["model_kwargs"] == {"k": 10, "dropout": 0.5, "num_points": None, "graph": "static",
                                   "operator_scale": "spacing",
                                   "mgic": {"group_size": 8, "coarsest": 16, "level_rule": "paper",
                                            "transfer_init": "average", "zero_init_correction": True}}
    assert meta["num_classes"] == 10 and meta["categories"] == list(CLASSES)
    assert meta["num_params"] == sum(p.numel() for p in network.parameters())
    assert meta["num_points"] == NUM_POINTS and meta["epochs"] == 2
    assert meta["global_step"] == load(released.checkpoint)["global_step"] > 0
    assert meta["metrics"]["overall_accuracy"] == results["overall_accuracy"]
    assert meta["metrics"]["mean_class_accuracy"] == results["mean_class_accuracy"]
    assert meta["metrics"]["split"] == "test" and meta["metrics"]["num_samples"] == 10
    recipe = meta["recipe"]
    assert recipe["config"] == "experiments/modelnet10/mgic_diffgcn.yaml" and recipe["optimizer"] == "adam"
    assert recipe["lr"] == 0.003 and recipe["batch_size"] == 8 and recipe["augment"] is True
    assert recipe["seed"] == 0 and recipe["max_epochs"] == 2  # from the test results and --meta-json
    assert meta["training_data"].startswith("synthetic stand-in shapes") and f"{NUM_POINTS} points" in meta["training_data"]
    assert meta["notes"] == "a test release"
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0]
    embedded = load(released.out)[META_KEY]
    assert embedded == {k: v for k, v in meta.items() if k not in ("sha256", "file", "size")}
    assert json.loads(released.printed[:released.printed.index("\n}\n") + 3]) == meta
    assert f"sha256 {meta['sha256']}  {released.out}" in released.printed


# -- create_model(weights=...) --------------------------------------------------------------------
def test_create_model_with_weights_computes_what_the_checkpoint_does(released):
    from mgic_geo.training import PointCloudClassifier

    reference = PointCloudClassifier.load_from_checkpoint(released.checkpoint).net.eval()
    weights = Weights.from_file(released.out)
    model = create_model("mgic_diffgcn", weights=weights).eval()
    assert type(model) is type(reference) and model.training is False
    pos, batch = clouds()
    with torch.no_grad():
        expected = reference(pos, batch)
        assert torch.equal(model(pos, batch), expected)
        fixed = create_model("mgic_diffgcn", weights=weights, num_classes=10, num_points=NUM_POINTS, dropout=0.0)
        assert torch.allclose(fixed.eval()(pos, batch), expected, atol=1e-5)
        # the release file is a Lightning checkpoint of the task too
        task = PointCloudClassifier.load_from_checkpoint(released.out).eval()
        assert torch.equal(task(pos, batch), expected)
    assert weights.verify() == json.loads(released.meta_path.read_text())["sha256"]


def test_weights_by_member_name_qualified_name_and_default(released, monkeypatch):
    monkeypatch.setattr(mgic_geo.models.weights, "RELEASE_DIR", released.out.parent)
    expected = create_model("mgic_diffgcn", weights=Weights.from_file(released.out)).state_dict()
    assert MGICDiffGCN_Weights.DEFAULT is MGICDiffGCN_Weights.MODELNET10_V1 and MGICDiffGCN_Weights.DEFAULT.available
    names = ("MODELNET10_V1", "DEFAULT", "MGICDiffGCN_Weights.MODELNET10_V1", "MGICDiffGCN_Weights.DEFAULT")
    members = (MGICDiffGCN_Weights.MODELNET10_V1, MGICDiffGCN_Weights.DEFAULT, get_weight("MGICDiffGCN_Weights.DEFAULT"))
    for weights in names + members:
        state = create_model("mgic_diffgcn", weights=weights).state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items()), weights
    assert MGICDiffGCN_Weights.DEFAULT.meta == json.loads(released.meta_path.read_text())
    assert list_weights() == list_weights("mgic_diffgcn") == ["MGICDiffGCN_Weights.MODELNET10_V1"]
    assert get_model_weights("mgic_diffgcn") is MGICDiffGCN_Weights
    assert MGICDiffGCN_Weights.verify(None) is None
    assert MGICDiffGCN_Weights.verify("DEFAULT") is MGICDiffGCN_Weights.MODELNET10_V1


def test_conflicting_arguments_are_refused(released):
    weights = Weights.from_file(released.out)
    with pytest.raises(WeightsError, match=rf"^{FILE_NAME} were trained for num_classes=10 \(bathtub, bed, .*, toilet\), "
                                           r"got num_classes=40: leave num_classes out"):
        create_model("mgic_diffgcn", weights=weights, num_classes=40)
    with pytest.raises(WeightsError, match=rf"^{FILE_NAME}: k=20 \(the weights were trained with k=10\), "
                                           r"graph='dynamic' \(the weights were trained with graph='static'\); "
                                           r"with weights only num_points, dropout may be changed$"):
        create_model("mgic_diffgcn", weights=weights, k=20, graph="dynamic")
    with pytest.raises(ValueError, match=r"model 'mgic_diffgcn' takes no argument\(s\) 'widths'"):
        create_model("mgic_diffgcn", weights=weights, widths=(8,))


def test_unknown_or_foreign_weights_are_named(released, tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match=r"^unknown weights 'IMAGENET1K_V1' for MGICDiffGCN_Weights; available: "
                                           r"MODELNET10_V1, DEFAULT$"):
        create_model("mgic_diffgcn", weights="IMAGENET1K_V1")
    with pytest.raises(WeightsError, match=r"^model 'diffgcn' has no released weights; models with weights: mgic_diffgcn$"):
        create_model("diffgcn", weights="DEFAULT")
    with pytest.raises(WeightsError, match=rf"^{FILE_NAME} are weights of model 'mgic_diffgcn', not 'diffgcn'$"):
        create_model("diffgcn", weights=MGICDiffGCN_Weights.DEFAULT)
    with pytest.raises(WeightsError, match=r"^unknown weights 'ResNet50_Weights.DEFAULT'; available: "
                                           r"MGICDiffGCN_Weights.MODELNET10_V1"):
        get_weight("ResNet50_Weights.DEFAULT")
    with pytest.raises(WeightsError, match=r"^`weights` must be None, a weights enum member, its name or a Weights, "
                                           r"got int"):
        create_model("mgic_diffgcn", weights=1)
    # a registered member whose file is not there (as in this repository until the release run)
    monkeypatch.setattr(mgic_geo.models.weights, "RELEASE_DIR", tmp_path)
    assert not MGICDiffGCN_Weights.DEFAULT.available
    with pytest.raises(WeightsError, match=rf"^{tmp_path / FILE_NAME.replace('.pt', '.json')}: no such metadata file "
                                           r"\(these weights are not shipped with this installation of mgic_geo yet"):
        create_model("mgic_diffgcn", weights="DEFAULT")


# -- what loading refuses -------------------------------------------------------------------------
def test_a_changed_byte_is_a_sha256_mismatch_caught_before_unpickling(released, tmp_path, monkeypatch):
    path = copy_release(released, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    recorded = json.loads(path.with_suffix(".json").read_text())["sha256"]
    actual = hashlib.sha256(bytes(data)).hexdigest()

    def never(*args, **kwargs):
        raise AssertionError("torch.load was called on a file that failed its sha256 check")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(WeightsError) as error:
        create_model("mgic_diffgcn", weights=Weights.from_file(path))
    assert str(error.value) == (f"{path}: sha256 mismatch: the file hashes to {actual}, but its metadata "
                                f"(copy.json) records {recorded}; the file is damaged or was changed after release, "
                                "so it was not loaded")


class Payload:
    """Unpickling this runs a shell command (what a malicious weights file would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickled_payload_is_refused_and_never_runs(released, tmp_path):
    path = copy_release(released, tmp_path)
    marker = tmp_path / "pwned"
    rewrite(path, {**load(released.out), "payload": Payload(marker)})  # its hash recorded: only weights_only stops it
    with pytest.raises(WeightsError, match=rf"^{path}: refused to load: the file holds a pickled reference to "
                                           r"posix.system, which is neither weights nor plain data"):
        create_model("mgic_diffgcn", weights=Weights.from_file(path))
    assert not marker.exists()


def test_nonfinite_tensors_are_refused_by_name(released, tmp_path):
    path = copy_release(released, tmp_path)
    release = load(released.out)
    name = next(k for k, v in release["state_dict"].items() if v.is_floating_point() and k.endswith("weight"))
    poisoned = release["state_dict"][name].clone()
    poisoned.view(-1)[0] = float("nan")
    release["state_dict"][name] = poisoned
    rewrite(path, release)
    with pytest.raises(WeightsError, match=rf"^{path}: refused: 1 tensor\(s\) hold NaN or inf: {name}$"):
        Weights.from_file(path).get_state_dict()
    # and the release tool never writes such weights
    checkpoint = load(released.checkpoint)
    checkpoint["state_dict"][name] = release["state_dict"][name]
    with pytest.raises(WeightsError, match=rf"refused to release: 1 weight tensor\(s\) hold NaN or inf \({name}\)"):
        release_weights(checkpoint, tmp_path / "nan.pt", test_results=released.results, config="x")
    assert not (tmp_path / "nan.pt").exists()


def test_weights_that_do_not_fit_are_listed(released, tmp_path):
    path = copy_release(released, tmp_path)
    release = load(released.out)
    state = release["state_dict"]
    dropped = next(k for k in state if k.startswith("net.") and k.endswith("weight"))
    del state[dropped]
    resized = next(k for k in state if k.startswith("net.") and k.endswith("bias") and state[k].dim() == 1)
    state[resized] = torch.zeros(state[resized].numel() + 1)
    rewrite(path, release)
    with pytest.raises(WeightsError) as error:
        create_model("mgic_diffgcn", weights=Weights.from_file(path))
    message = str(error.value)
    assert message.startswith(f"{path}: the weights do not fit 'mgic_diffgcn' built with ")
    assert f"1 missing keys ({dropped[4:]})" in message and f"1 shape mismatches ({resized[4:]} " in message


def test_metadata_inside_and_beside_the_file_must_agree(released, tmp_path):
    path = copy_release(released, tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["categories"] = meta["categories"][::-1]
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match=rf"^{path}: the metadata inside the file and copy.json disagree on categories"):
        Weights.from_file(path).get_state_dict()
    del meta["metrics"]
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match=r"copy.json: incomplete metadata: metrics is missing"):
        Weights.from_file(path)


# -- the release tool ------------------------------------------------------------------------------
def test_release_refuses_incomplete_metadata_and_foreign_test_results(released, tmp_path, capsys):
    out = tmp_path / "r.pt"
    assert main(["release-weights", "--ckpt", str(released.checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgic-geo: error: release: incomplete metadata: ") and err.count("\n") == 1
    assert "metrics is missing" in err and "recipe.config must be the training config file, got None" in err
    assert "(give --test-results for the metrics and categories, --config for recipe.config" in err
    assert not out.exists()

    epoch0 = tmp_path / "epoch0.ckpt"
    shutil.copyfile(released.checkpoint.parent / "epoch000.ckpt", epoch0)
    with pytest.raises(WeightsError, match=rf"these test results are of the checkpoint {released.checkpoint.resolve()}, "
                                           rf"not of {epoch0}"):
        release_weights(epoch0, out, test_results=released.results, config="x")
    with pytest.raises(WeightsError, match=r"^the extra metadata may not set model_kwargs, num_classes: "
                                           r"the weights fix them$"):
        release_weights(released.checkpoint, out, test_results=released.results, config="x",
                        meta={"num_classes": 40, "model_kwargs": {}})
    with pytest.raises(WeightsError, match=r"must end in \.pt"):
        release_weights(released.checkpoint, tmp_path / "r.ckpt", test_results=released.results, config="x")


def test_mgic_geo_test_restores_the_release_file(released, tmp_path, monkeypatch):
    """`mgic-geo test --config experiments/modelnet10/mgic_diffgcn.yaml --ckpt_path <release file>` gives the
    accuracy the training checkpoint gave on the same test clouds."""
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)
    run = tmp_path / "run"
    assert main(["test", "--config", str(EXPERIMENT), "--data.root", str(released.root), "--data.source", "synthetic",
                 "--data.synthetic_shapes", "[4, 1]", "--data.num_points", str(NUM_POINTS), "--data.batch_size", "8",
                 "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(run),
                 "--trainer.enable_progress_bar", "false", "--ckpt_path", str(released.out)]) == 0
    results = json.loads(next(run.rglob("test_results.json")).read_text())
    expected = json.loads(released.results.read_text())
    assert results["checkpoint"] == str(released.out.resolve())
    assert results["epochs"] == 2 and results["num_test_samples"] == 10
    assert results["global_step"] == load(released.checkpoint)["global_step"]
    assert results["model"] == "mgic_diffgcn" and results["model_kwargs"] == MODEL_KWARGS
    for key in ("overall_accuracy", "mean_class_accuracy", "per_class_accuracy", "params"):
        assert results[key] == expected[key], key


def test_mgic_geo_test_refuses_a_release_file_changed_since_release(released, tmp_path, capsys):
    import shutil

    copy = tmp_path / "tampered.pt"
    shutil.copyfile(released.out, copy)
    shutil.copyfile(released.out.with_suffix(".json"), copy.with_suffix(".json"))
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0x01  # inside the zip's data, still a readable checkpoint for torch.load or not
    copy.write_bytes(bytes(data))
    assert main(["test", "--config", str(EXPERIMENT), "--ckpt_path", str(copy)]) == 2
    error = capsys.readouterr().err
    assert "mgic-geo: error:" in error and "tampered.pt" in error


# -- the shipped files ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_weights())
def test_shipped_weights_match_their_metadata(name):
    weights = get_weight(name)
    if not weights.available:
        pytest.skip(f"{weights.path.relative_to(REPO) if weights.path.is_relative_to(REPO) else weights.path} is not "
                    "shipped yet: it is added from the release run (README, 'Released weights')")
    meta = weights.meta
    assert meta["file"] == weights.path.name and meta["size"] == weights.path.stat().st_size
    assert sha256_of(weights.path) == meta["sha256"]
    release = weights.load_checkpoint()
    assert release["hyper_parameters"]["model"] == meta["model"] == weights.model
    assert release["epoch"] == max(meta["epochs"] - 1, 0) and release["global_step"] == meta["global_step"]
    assert {"optimizer_states", "loops", "callbacks", "lr_schedulers"}.isdisjoint(release)
    model = create_model(weights.model, weights=weights).eval()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == meta["num_params"]
    assert len(meta["categories"]) == meta["num_classes"]
    assert 0.0 <= meta["metrics"]["overall_accuracy"] <= 1.0 and meta["metrics"]["split"]
    assert meta["recipe"]["config"] and meta["training_data"]
    if meta["model"] == "mgic_diffgcn":
        assert meta["categories"] == list(CLASSES) and "synthetic" not in meta["training_data"]
        pos, batch = clouds(2, points=meta["num_points"] or 1024)
        with torch.no_grad():
            logits = model(pos, batch)
        assert logits.shape == (2, meta["num_classes"]) and bool(torch.isfinite(logits).all())


def test_package_data_ships_the_release_folder():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["mgic_geo.models"]
    assert RELEASE_DIR == REPO / "mgic_geo" / "models" / "released"
    for name in list_weights():
        weights = get_weight(name)
        assert weights.path.parent == RELEASE_DIR
        for path in (weights.path, weights.meta_path):
            relative = path.relative_to(RELEASE_DIR.parent).as_posix()
            assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


@pytest.mark.parametrize("module", [mgic_geo.models.weights, mgic_geo.models.release], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
