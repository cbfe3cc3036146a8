"""``mgic-geo predict`` and :mod:`mgic_geo.inference`: batched outputs equal one-by-one outputs, memory
stays flat over a stream, the CSV has one row per cloud in order, checkpoints of a tiny fit load, and
every bad input is a one-line error naming it.

The long version (100,000 clouds) is opt-in: the command is in the module docstring of
:mod:`mgic_geo.inference.cli`.
"""
import csv
import doctest
import itertools
import os
import re

import numpy as np
import pytest
import torch
import yaml

import mgic_geo.data.clouds
import mgic_geo.inference
import mgic_geo.inference.checkpoint
import mgic_geo.inference.cli
import mgic_geo.inference.render
import mgic_geo.inference.stream
from mgic_geo.cli import main
from mgic_geo.data.layout import CLASSES
from mgic_geo.data.synthetic import off_text, synthetic_mesh
from mgic_geo.models import create_model
from mgic_geo.data.clouds import read_cloud, synthetic_clouds, true_class
from mgic_geo.inference import (MemoryMonitor, load_classifier, one_by_one, predict_clouds, render_clouds,
                                set_batchnorm_statistics)

# Batched and one-by-one logits differ by float32 rounding only (measured: at most 2.5e-6, on logits
# that lie up to 3.3 apart from cloud to cloud); a real difference (another kNN graph, BatchNorm in
# training mode, points of another cloud) moves them by far more than 1e-4. The networks' BatchNorm
# statistics are set first (set_batchnorm_statistics), as `predict --model` does: with their initial
# statistics every cloud gets nearly the same logits and the comparison would prove little.
ATOL = 1e-4
# Trimmed RSS (mgic_geo.inference.MemoryMonitor) over the 2,000-cloud stream moved by at most 0.1 MiB
# in our runs. 8 MiB leaves room for page and arena noise and still fails if the stream kept every
# batch's inputs (pos and batch vector: 320 KiB per batch of 64 x 256 points, 8.8 MiB over the 28
# batches after the warm-up), its autograd graph (several MiB per batch) or the clouds.
MAX_GROWTH_MIB = 8.0


@pytest.fixture
def one_thread():
    # The test machine is shared: with other jobs on its 2 cores, 2 intra-op threads were 2-7x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def error_line(stderr: str) -> str:
    """The ``mgic-geo: error:`` line of ``stderr`` (a progress bar or Lightning's logs may come first)."""
    return next((line for line in stderr.splitlines() if line.startswith("mgic-geo: error:")), stderr)


def read_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("module", [mgic_geo.inference, mgic_geo.inference.stream, mgic_geo.inference.render,
                                    mgic_geo.inference.checkpoint, mgic_geo.data.clouds], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------------------------
# The short load run


def test_short_load_run_batches_equal_one_by_one_memory_flat_csv_in_order(tmp_path, capsys, one_thread, request):
    """2,000 clouds of 256 points through mgic_diffgcn (k=4 keeps it near 20 s here): the figures for
    docs/reliability.md, printed with ``pytest -s``."""
    out = tmp_path / "p.csv"
    code = main(["predict", "--model", "mgic_diffgcn", "--model-kwargs", '{"k": 4}', "--synthetic", "2000",
                 "--num-points", "256", "--batch-size", "64", "--threads", "1", "--check-memory", "--memory-every", "4",
                 "--check-equal", "128", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    if request.config.getoption("capture") == "no":  # pytest -s: show the figures
        with capsys.disabled():
            print("\n" + printed)
    assert code == 0, printed

    equal = re.search(r"check-equal: the first (\d+) clouds .* max \|logit difference\| (\S+) .* logits lie up to (\S+) "
                      r"from their mean\), argmax agree (\d+)/(\d+): (\w+)", printed)
    assert equal, printed
    assert int(equal[1]) == 128 and float(equal[2]) <= ATOL and equal[4] == equal[5] == "128" and equal[6] == "equal"
    assert float(equal[3]) > 1000 * ATOL  # the clouds' logits differ: equal to rounding means the same cloud

    memory = re.search(r"memory: RSS after malloc_trim\(0\): start (\S+) MiB .* max (\S+) MiB, end (\S+) MiB; "
                       r"growth (\S+) MiB over (\d+) clouds \((\S+) MiB per 10k clouds\)", printed)
    assert memory, printed
    start, top, end, growth, clouds = (float(memory[i]) for i in range(1, 6))
    assert clouds == 2000 - 4 * 64  # the first sample, after 4 batches of warm-up, is the start
    assert abs(growth) < MAX_GROWTH_MIB and top - start < MAX_GROWTH_MIB, printed
    assert end == pytest.approx(start + growth, abs=0.11)

    rows = read_rows(out)
    assert [row["file"] for row in rows] == [f"synthetic-{i:06d}" for i in range(2000)]
    assert all(row["class_name"] == CLASSES[int(row["class"])] for row in rows)
    assert not list(tmp_path.glob(".*partial"))


def test_predict_clouds_mixed_sizes_equal_one_by_one_and_in_order(one_thread):
    torch.manual_seed(1)
    model = set_batchnorm_statistics(create_model("mgic_diffgcn", num_classes=10), synthetic_clouds(16, 128, seed=9))
    generator = torch.Generator().manual_seed(2)
    sizes = [11, 300, 64, 11, 129, 1024, 12, 77, 256, 40]  # 11 = k + 1, the fewest allowed
    clouds = [torch.rand(n, 3, generator=generator) * 2 - 1 for n in sizes]
    batched = torch.stack(list(predict_clouds(model, iter(clouds), batch_size=4)))
    alone = torch.stack(list(one_by_one(model, clouds)))
    assert batched.shape == (len(sizes), 10)
    assert torch.allclose(batched, alone, atol=ATOL, rtol=0), (batched - alone).abs().max()
    assert torch.equal(batched.argmax(1), alone.argmax(1))
    # in order: each cloud's own logits, not a neighbour's (the logits of different clouds differ)
    assert all(not torch.allclose(batched[i], alone[i + 1], atol=100 * ATOL) for i in range(len(sizes) - 1))
    # ordinary tensors, not inference tensors: usable in place afterwards
    batched[0].add_(1)


def test_predict_clouds_is_lazy_and_reads_a_batch_at_a_time():
    model = create_model("diffgcn", num_classes=3, k=4)
    read = []

    def endless():
        for index in itertools.count():
            read.append(index)
            yield torch.rand(20, 3)

    first = list(itertools.islice(predict_clouds(model, endless(), batch_size=8), 10))
    assert len(first) == 10 and len(read) == 16  # two batches, nothing more
    # suspended between batches, the generator leaves the caller outside inference mode
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_synthetic_clouds_are_deterministic_lazy_and_normalised():
    a = list(synthetic_clouds(12, num_points=100, seed=3))
    b = list(synthetic_clouds(12, num_points=100, seed=3))
    c = next(synthetic_clouds(1, num_points=100, seed=4))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == 12
    assert not torch.equal(a[0], c) and not torch.equal(a[0], a[10])  # same class, another shape
    assert all(x.shape == (100, 3) and x.dtype == torch.float32 for x in a)
    assert all(float(x.mean(0).abs().max()) < 1e-5 and float(x.norm(dim=1).max()) == pytest.approx(1, abs=1e-5) for x in a)
    assert list(synthetic_clouds(0)) == []
    # lazy: a stream of a billion clouds costs nothing until read
    assert next(synthetic_clouds(10**9, num_points=8)).shape == (8, 3)


def test_set_batchnorm_statistics_makes_an_untrained_network_tell_clouds_apart(one_thread):
    torch.manual_seed(0)
    model = create_model("mgic_diffgcn", num_classes=10)
    weights = {name: value.clone() for name, value in model.named_parameters()}
    clouds = list(synthetic_clouds(20, num_points=64, seed=5))

    def spread():
        logits = torch.stack(list(predict_clouds(model, clouds, batch_size=20)))
        return float((logits - logits.mean(0)).abs().max()), len(set(logits.argmax(1).tolist()))

    before = spread()
    model.train()  # left in eval mode afterwards, whatever it was in
    set_batchnorm_statistics(model, synthetic_clouds(8, num_points=64, seed=6))
    after = spread()
    assert before[0] < 1e-2 and before[1] == 1, before  # every cloud nearly the same logits: one class
    assert after[0] > 0.5 and after[1] >= 3, after
    assert not model.training and all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert all(torch.equal(value, weights[name]) for name, value in model.named_parameters())
    with pytest.raises(ValueError, match="needs at least 2 clouds, got 1"):
        set_batchnorm_statistics(model, clouds[:1])


def test_memory_monitor_sees_growth():
    """The check can fail: memory kept between samples shows as growth (the short run shows none)."""
    monitor = MemoryMonitor(every=1)
    kept = []
    for batch in range(1, 6):
        kept.append(np.ones(4 * 2**20 // 8))  # 4 MiB touched per batch, kept
        monitor.after_batch(batch, batch * 10)
    figures = monitor.figures()
    assert figures["clouds"] == 40 and figures["growth"] == pytest.approx(16, abs=2)
    assert figures["per_10k"] == pytest.approx(16 / 40 * 10_000, rel=0.15)
    with pytest.raises(ValueError, match="too few batches"):
        MemoryMonitor(every=5).figures()


# ----------------------------------------------------------------------------------------------
# Checkpoints and files


def tiny_fit_config(tmp_path) -> str:
    config = {
        "seed_everything": 0,
        "trainer": {"default_root_dir": str(tmp_path / "run"), "max_epochs": 1, "accelerator": "cpu", "devices": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1},
        "model": {"class_path": "mgic_geo.training.PointCloudClassifier", "init_args": {
            "model": "mgic_diffgcn", "model_kwargs": {"k": 4, "dropout": 0.0}, "optimizer": "adam", "lr": 0.003,
            "min_lr": 0.0003, "weight_decay": 0.0}},
        "data": {"class_path": "mgic_geo.data.ModelNet10DataModule", "init_args": {
            "root": str(tmp_path / "synthetic"), "source": "synthetic", "synthetic_shapes": [1, 1], "num_points": 64,
            "batch_size": 8, "augment": False}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """``last.ckpt`` of a one-epoch ``mgic-geo fit`` on 10 generated shapes."""
    tmp_path = tmp_path_factory.mktemp("fit")
    saved = {name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    try:
        assert main(["fit", "--config", tiny_fit_config(tmp_path)]) == 0
    finally:  # seed_everything sets these for the whole process
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


def write_inputs(folder):
    """A folder of inputs: two meshes, point clouds with more and fewer points than sampled, a README."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    (folder / "chair.off").write_text(off_text(*synthetic_mesh("chair", rng)))
    nested = folder / "more"
    nested.mkdir()
    (nested / "table.off").write_text(off_text(*synthetic_mesh("table", rng)))
    np.save(folder / "many.npy", rng.normal(size=(500, 3)))
    np.savetxt(folder / "few.xyz", rng.normal(size=(20, 3)))  # padded to --num-points by repeats
    (folder / "README.md").write_text("not a shape")  # a folder's other files are not inputs
    return ["chair.off", "few.xyz", "many.npy", "more/table.off"]


def test_cli_with_a_checkpoint_of_a_tiny_fit_and_input_files(tmp_path, capsys, checkpoint, one_thread):
    names = write_inputs(tmp_path / "inputs")
    out = tmp_path / "p.csv"
    assert main(["predict", "--ckpt", str(checkpoint), "--inputs", str(tmp_path / "inputs"), "--num-points", "64",
                 "--batch-size", "3", "--check-equal", "4", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"with mgic_diffgcn from {checkpoint}: 64 points each, batches of 3" in printed
    assert "argmax agree 4/4: equal" in printed
    rows = read_rows(out)
    assert [row["file"] for row in rows] == [str(tmp_path / "inputs" / name) for name in names]
    assert all(row["class_name"] == CLASSES[int(row["class"])] for row in rows)

    # the API gives the same classes, and the same again for the same seed (sampling is seeded)
    classifier = load_classifier(checkpoint)
    assert type(classifier).__name__ == "PointCloudClassifier" and not classifier.training
    clouds = [read_cloud(tmp_path / "inputs" / name, 64, index=i) for i, name in enumerate(names)]
    assert [int(x.argmax()) for x in predict_clouds(classifier, clouds)] == [int(row["class"]) for row in rows]

    # a glob instead of a folder
    assert main(["predict", "--ckpt", str(checkpoint), "--inputs", str(tmp_path / "inputs" / "**" / "*.off"),
                 "--num-points", "64", "--out", str(out), "--no-progress"]) == 0
    assert [row["file"] for row in read_rows(out)] == [str(tmp_path / "inputs" / n) for n in ("chair.off", "more/table.off")]


def test_cli_with_an_untrained_model(tmp_path, capsys, one_thread):
    out = tmp_path / "deep" / "p.csv"  # missing folders are made
    assert main(["predict", "--model", "diffgcn", "--num-classes", "4", "--synthetic", "10", "--num-points", "32",
                 "--batch-size", "4", "--check-equal", "10", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert ("predicted 10 clouds with diffgcn (untrained: seed 0, BatchNorm statistics of 32 synthetic clouds): 32 points "
            "each, batches of 4") in printed
    assert "argmax agree 10/10: equal" in printed
    rows = read_rows(out)
    assert len(rows) == 10 and all(row["class"] in "0123" and row["class_name"] == "" for row in rows)  # names unknown
    # --seed: the same weights and clouds give the same CSV
    assert main(["predict", "--model", "diffgcn", "--num-classes", "4", "--synthetic", "10", "--num-points", "32",
                 "--out", str(tmp_path / "again.csv"), "--no-progress"]) == 0
    assert read_rows(tmp_path / "again.csv") == rows


def test_predict_help_is_a_top_level_command(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["predict", "--help"])
    assert exit.value.code == 0
    assert "--check-memory" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# Bad inputs


def bad_checkpoints(folder):
    folder.mkdir()
    torch.save({"hyper_parameters": {"_class_path": "mgic_geo.training.ImageClassifier", "model": "resnet56"},
                "state_dict": {}}, folder / "image.ckpt")
    torch.save({"weights": torch.zeros(3)}, folder / "weights.pt")
    torch.save({"hyper_parameters": {"model": "mgic_diffgcn", "model_kwargs": {"k": 4}},
                "state_dict": {"net.head.0.weight": torch.zeros(2, 2)}}, folder / "shapes.ckpt")
    torch.save({"hyper_parameters": {"model": "not_a_model"}, "state_dict": {}}, folder / "unknown.ckpt")
    # a pickled object of a class: weights_only=True must refuse it, never run its pickle code
    torch.save({"hyper_parameters": {}, "state_dict": {}, "payload": torch.nn.ReLU()}, folder / "object.ckpt")
    (folder / "text.ckpt").write_text("not a checkpoint")
    (folder / "a_folder.ckpt").mkdir()


@pytest.mark.parametrize("ckpt, expected", [
    ("missing.ckpt", "{d}/missing.ckpt: no such checkpoint file"),
    ("a_folder.ckpt", "{d}/a_folder.ckpt: is a directory, expected a checkpoint file"),
    ("text.ckpt", "{d}/text.ckpt: not a readable checkpoint: neither a zip archive as torch.save writes nor plain "
                  "data that torch.load(weights_only=True) accepts (UnpicklingError: Unsupported operand 110)"),
    ("object.ckpt", "{d}/object.ckpt: refused to load: the file holds a pickled reference to "
                    "torch.nn.modules.activation.ReLU, which is neither weights nor plain data"),
    ("image.ckpt", "{d}/image.ckpt: is not a PointCloudClassifier checkpoint: it is a checkpoint of "
                   "mgic_geo.training.ImageClassifier"),
    ("weights.pt", "{d}/weights.pt: is not a PointCloudClassifier checkpoint: expected a Lightning checkpoint with "
                   "'hyper_parameters' and 'state_dict', found ['weights']"),
    ("unknown.ckpt", "{d}/unknown.ckpt: is not a PointCloudClassifier checkpoint: its hyperparameters name the model "
                     "'not_a_model'"),
    ("shapes.ckpt", "{d}/shapes.ckpt: its weights do not fit 'mgic_diffgcn' built from its hyperparameters"),
])
def test_bad_checkpoint_is_a_one_line_error_naming_it(tmp_path, capsys, ckpt, expected):
    bad_checkpoints(tmp_path / "c")
    out = tmp_path / "p.csv"
    assert main(["predict", "--ckpt", str(tmp_path / "c" / ckpt), "--synthetic", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert error_line(err).startswith("mgic-geo: error: `--ckpt` " + expected.format(d=tmp_path / "c")), err
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(ValueError, match=re.escape(expected.format(d=tmp_path / "c"))):
        load_classifier(tmp_path / "c" / ckpt)


@pytest.mark.parametrize("arguments, expected", [
    (["--batch-size", "0"], "`--batch-size` must be a positive integer, got 0"),
    (["--synthetic", "0"], "`--synthetic` must be a positive integer, got 0"),
    (["--num-points", "4"], "`--num-points` must be at least 5 for this model (its k=4 neighbours plus the point "
                            "itself), got 4"),
    (["--check-equal", "-1"], "`--check-equal` must be a non-negative integer, got -1"),
    (["--memory-every", "0"], "`--memory-every` must be a positive integer, got 0"),
    (["--device", "tpu"], "`--device` must be one of auto, cpu, cuda, got 'tpu'"),
    (["--model-kwargs", "k=4"], "`--model-kwargs` must be a JSON object, got 'k=4'"),
    (["--model", "resnet56"], "`--model` 'resnet56' is a network for image classification, not point clouds"),
    (["--model", "nope"], "`--model` 'nope' is not a registry model"),
    (["--model-kwargs", '{"k": 4, "num_points": 64}'], "`--num-points` 32 differs from the model's num_points=64"),
    (["--render", "65"], "`--render` draws at most 64 clouds, got 65"),
    (["--render", "-1"], "`--render` must be a non-negative integer, got -1"),
    (["--render", "2", "--render-out", "clouds.csv"], "`--render-out` clouds.csv: expected a picture file name ending in "
                                                      "one of"),
])
def test_bad_option_is_a_one_line_error_naming_it(tmp_path, capsys, arguments, expected):
    base = {"--model": "mgic_diffgcn", "--model-kwargs": '{"k": 4}', "--synthetic": "3", "--num-points": "32",
            "--out": str(tmp_path / "p.csv")}
    base.update(zip(arguments[::2], arguments[1::2]))
    assert main(["predict", *itertools.chain.from_iterable(base.items()), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert error_line(err).startswith(f"mgic-geo: error: {expected}"), err
    assert "Traceback" not in err and not (tmp_path / "p.csv").exists()


def test_bad_input_files_are_one_line_errors_naming_them(tmp_path, capsys):
    model = ["predict", "--model", "mgic_diffgcn", "--model-kwargs", '{"k": 4}', "--num-points", "32", "--no-progress",
             "--out", str(tmp_path / "p.csv")]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt.bak").write_text("")
    assert main([*model, "--inputs", str(tmp_path / "empty")]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        f"mgic-geo: error: `--inputs` {tmp_path / 'empty'}: no mesh or point-cloud files (.off .pcd")

    assert main([*model, "--inputs", str(tmp_path / "nothing" / "*.ply")]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        f"mgic-geo: error: `--inputs` {tmp_path / 'nothing' / '*.ply'}: the pattern matches no file")

    # a cloud with fewer points than k + 1, after good ones: named, and no CSV is left behind
    (tmp_path / "clouds").mkdir()
    np.savetxt(tmp_path / "clouds" / "a.xyz", np.random.default_rng(0).normal(size=(50, 3)))
    np.savetxt(tmp_path / "clouds" / "b.xyz", np.random.default_rng(1).normal(size=(4, 3)))
    assert main([*model, "--inputs", str(tmp_path / "clouds")]) == 2
    err = capsys.readouterr().err
    assert error_line(err) == (f"mgic-geo: error: {tmp_path / 'clouds' / 'b.xyz'}: has 4 points; the model needs at "
                               "least 5 (its k=4 neighbours plus the point itself)"), err
    assert not (tmp_path / "p.csv").exists() and not list(tmp_path.glob(".*partial"))

    (tmp_path / "clouds" / "b.xyz").write_text("1 2 3\n4 five 6\n")
    assert main([*model, "--inputs", str(tmp_path / "clouds")]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        f"mgic-geo: error: {tmp_path / 'clouds' / 'b.xyz'}: is not a table of numbers")


def test_bad_api_arguments_name_the_value():
    model = create_model("diffgcn", num_classes=3, k=4)
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer, got 0"):
        predict_clouds(model, [], batch_size=0)  # at the call, before any cloud is read
    with pytest.raises(ValueError, match=r"`model` must be a torch.nn.Module .* got str"):
        predict_clouds("diffgcn", [])
    with pytest.raises(ValueError, match=r"cloud 1 has 4 points; the model needs at least 5 \(its k=4 neighbours"):
        list(predict_clouds(model, [torch.rand(10, 3), torch.rand(4, 3)]))
    with pytest.raises(ValueError, match=r"cloud 0: expected an \[N, 3\] tensor of coordinates, got shape \(10, 2\)"):
        list(predict_clouds(model, [torch.rand(10, 2)]))
    with pytest.raises(ValueError, match=r"cloud 2 has NaN or infinite coordinates"):
        list(predict_clouds(model, [torch.rand(10, 3), torch.rand(10, 3), torch.full((10, 3), float("nan"))]))
    fixed = create_model("diffgcn", num_classes=3, k=4, num_points=16)
    with pytest.raises(ValueError, match=r"cloud 0 has 10 points, but the model was built for clouds of exactly 16"):
        list(predict_clouds(fixed, [torch.rand(10, 3)]))
    with pytest.raises(ValueError, match=r"`count` must be a non-negative integer, got -1"):
        synthetic_clouds(-1)


# ----------------------------------------------------------------------------------------------
# Pictures (--render)


def png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


def test_render_clouds_titles_and_colours(tmp_path):
    clouds = list(synthetic_clouds(5, num_points=40))
    figure = render_clouds(clouds, [0, 1, 2, 3, 4], class_names=list(CLASSES), true=[0, 2, None, 3, None],
                           labels=[f"c{i}" for i in range(5)], path=tmp_path / "deep" / "clouds.png", columns=2)
    assert len(figure.axes) == 5 and all(ax.name == "3d" for ax in figure.axes)
    assert [ax.get_subplotspec().get_geometry()[:2] for ax in figure.axes] == [(3, 2)] * 5
    titles = [ax.title for ax in figure.axes]
    assert titles[0].get_text() == "c0\npred: bathtub\ntrue: bathtub" and titles[0].get_color() == "green"
    assert titles[1].get_text() == "c1\npred: bed\ntrue: chair" and titles[1].get_color() == "red"
    assert titles[2].get_text() == "c2\npred: chair" and titles[2].get_color() == "black"  # truth unknown
    assert [len(ax.collections[0].get_offsets()) for ax in figure.axes] == [40] * 5  # every point drawn
    width, height = png_size(tmp_path / "deep" / "clouds.png")
    assert 500 <= width <= 2000 and 800 <= height <= 2000, (width, height)
    # without names, classes are written as indices
    assert render_clouds(clouds[:1], [7]).axes[0].get_title() == "pred: 7"
    with pytest.raises(ValueError, match="`true` has 1 entries for 2 clouds"):
        render_clouds(clouds[:2], [0, 1], true=[0])
    with pytest.raises(ValueError, match="render_clouds draws 1 to 64 clouds, got 0"):
        render_clouds([], [])


def test_true_class_from_modelnet_layout():
    assert true_class("ModelNet10/night_stand/train/night_stand_0001.off") == CLASSES.index("night_stand")
    assert true_class("/data/x/sofa/val/sofa_0001.npy") == CLASSES.index("sofa")
    assert true_class("sofa/other/sofa_0001.off") is None  # not a split folder
    assert true_class("lamp/test/lamp_0001.off") is None  # not a class
    assert true_class("b/test/b_1.off", ["a", "b"]) == 1 and true_class("b/test/b_1.off", None) is None


def test_cli_render_with_a_checkpoint_and_modelnet_layout(tmp_path, capsys, checkpoint, one_thread, monkeypatch):
    figures = []

    def keep(*args, **kwargs):
        figures.append(render_clouds(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(mgic_geo.inference.cli, "render_clouds", keep)
    rng = np.random.default_rng(0)
    files = []
    for name in ("chair", "table", "sofa"):
        folder = tmp_path / "ModelNet10" / name / "test"
        folder.mkdir(parents=True)
        files.append(folder / f"{name}_0001.off")
        files[-1].write_text(off_text(*synthetic_mesh(name, rng)))
    loose = tmp_path / "0_loose.off"  # no class folder: truth unknown; first in order
    loose.write_text(off_text(*synthetic_mesh("bed", rng)))
    out = tmp_path / "p.csv"
    assert main(["predict", "--ckpt", str(checkpoint), "--inputs", str(tmp_path / "**" / "*.off"), "--num-points", "64",
                 "--batch-size", "2", "--render", "3", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = read_rows(out)
    assert [row["file"] for row in rows] == [str(p) for p in [loose] + sorted(files)]
    assert f"wrote {tmp_path / 'p.png'} (3 clouds drawn;" in printed  # next to --out by default
    png_size(tmp_path / "p.png")
    (figure,) = figures
    assert len(figure.axes) == 3  # the first 3 clouds only, in order
    assert figure.axes[0].title.get_color() == "black"
    for ax, row in zip(figure.axes, rows):
        lines = ax.get_title().split("\n")
        assert lines[0] == row["file"].rsplit("/", 1)[1] and lines[1] == f"pred: {row['class_name']}"
        truth = row["file"].split("/")[-3]
        known = truth in CLASSES
        assert lines[2:] == ([f"true: {truth}"] if known else [])
        expected = ("green" if truth == row["class_name"] else "red") if known else "black"
        assert ax.title.get_color() == expected


def test_cli_render_synthetic_clouds_know_their_class(tmp_path, capsys, one_thread):
    picture = tmp_path / "pictures" / "clouds.png"
    assert main(["predict", "--model", "diffgcn", "--model-kwargs", '{"k": 4}', "--synthetic", "12", "--num-points",
                 "32", "--batch-size", "5", "--render", "12", "--render-out", str(picture), "--out",
                 str(tmp_path / "p.csv"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    right = sum(row["class_name"] == CLASSES[i % 10] for i, row in enumerate(read_rows(tmp_path / "p.csv")))
    assert f"wrote {picture} (12 clouds drawn; {right} of 12 with a known class right)" in printed
    png_size(picture)


# ----------------------------------------------------------------------------------------------
# A bad file among many (issue 16, item 9): --skip-bad, or stop keeping the rows already made


def write_mixed_inputs(folder):
    """Six clouds; the third unreadable (a non-number), the fifth a FIFO (never opened)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for number in range(6):
        np.savetxt(folder / f"c{number}.xyz", rng.normal(size=(40, 3)))
    (folder / "c2.xyz").write_text("1 2 3\n4 five 6\n")
    (folder / "c4.xyz").unlink()
    os.mkfifo(folder / "c4.xyz")
    return [folder / f"c{number}.xyz" for number in range(6)]


def test_without_skip_bad_the_rows_before_a_bad_file_are_kept_in_a_partial_file(tmp_path, capsys, one_thread):
    files = write_mixed_inputs(tmp_path / "in")
    out = tmp_path / "p.csv"
    model = ["predict", "--model", "mgic_diffgcn", "--model-kwargs", '{"k": 4}', "--num-points", "32", "--no-progress",
             "--batch-size", "4", "--out", str(out), "--inputs", str(tmp_path / "in")]
    assert main(model) == 2
    err = capsys.readouterr().err
    assert error_line(err) == (f"mgic-geo: error: {files[2]}: is not a table of numbers: line 2: 'five' is not a number "
                               "(the line is '4 five 6')")
    assert (f"  stopped at this file (input 3 of 6): the 2 row(s) predicted before it are kept in "
            f"{tmp_path / 'p.partial.csv'}; {out} was not written (--skip-bad skips bad files and goes on)") in err
    kept = read_rows(tmp_path / "p.partial.csv")
    assert not out.exists() and [row["file"] for row in kept] == [str(f) for f in files[:2]]

    # the same rows as a run over those files alone (the sampling seeds follow the input's position)
    assert main([*model[:-1], str(tmp_path / "in" / "c[01].xyz")]) == 0
    assert read_rows(out) == kept
    assert not (tmp_path / "p.partial.csv").exists()  # a complete run removes the earlier run's partial file

    # the first file bad: nothing to keep
    out.unlink()
    (tmp_path / "in" / "c0.xyz").write_text("OFF\n")
    assert main(model) == 2
    err = capsys.readouterr().err
    assert "stopped at this file (input 1 of 6): no cloud was predicted before it" in err
    assert not out.exists() and not (tmp_path / "p.partial.csv").exists()


def test_skip_bad_lists_the_skipped_files_and_exits_3(tmp_path, capsys, one_thread):
    files = write_mixed_inputs(tmp_path / "in")
    out = tmp_path / "p.csv"
    model = ["predict", "--model", "mgic_diffgcn", "--model-kwargs", '{"k": 4}', "--num-points", "32", "--no-progress",
             "--batch-size", "2", "--out", str(out), "--inputs", str(tmp_path / "in"), "--check-equal", "4",
             "--render", "3"]
    assert main([*model, "--skip-bad"]) == 3
    captured = capsys.readouterr()
    reasons = ["is not a table of numbers: line 2: 'five' is not a number (the line is '4 five 6')",
               "is a FIFO (named pipe), not a regular file; only regular files are read"]
    assert f"mgic-geo: skipped {files[2]}: {reasons[0]}" in captured.err
    assert f"mgic-geo: skipped {files[4]}: {reasons[1]}" in captured.err
    assert (f"skipped 2 of 6 input files that could not be read, listed with the reason in {tmp_path / 'p.skipped.csv'} "
            "(exit status 3)") in captured.out
    assert "argmax agree 4/4: equal" in captured.out and "(3 clouds drawn" in captured.out
    assert [row["file"] for row in read_rows(out)] == [str(files[i]) for i in (0, 1, 3, 5)]
    assert read_rows(tmp_path / "p.skipped.csv") == [{"file": str(files[2]), "reason": reasons[0]},
                                                     {"file": str(files[4]), "reason": reasons[1]}]
    skipped_rows = read_rows(out)

    # the good files give the same rows without --skip-bad; a clean run exits 0 and removes the old list
    (tmp_path / "in" / "c2.xyz").unlink()
    (tmp_path / "in" / "c4.xyz").unlink()
    assert main([*model, "--skip-bad"]) == 0
    assert [row["file"] for row in read_rows(out)] == [str(files[i]) for i in (0, 1, 3, 5)]
    assert [row["file"] for row in skipped_rows] == [row["file"] for row in read_rows(out)]
    assert not (tmp_path / "p.skipped.csv").exists()

    # nothing readable: an error, the list written, no CSV
    for path in (tmp_path / "in").iterdir():
        path.write_text("x y z\n")
    out.unlink()
    assert main([*model, "--skip-bad"]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        f"mgic-geo: error: none of the 4 input files could be read, so {out} was not written; each is listed with the "
        f"reason in {tmp_path / 'p.skipped.csv'}")
    assert not out.exists() and len(read_rows(tmp_path / "p.skipped.csv")) == 4


def test_a_short_point_file_is_padded_with_a_warning_naming_it(tmp_path):
    import numpy as np

    from mgic_geo.data.clouds import read_cloud

    path = tmp_path / "few.xyz"
    np.savetxt(path, np.random.default_rng(0).normal(size=(12, 3)))
    with pytest.warns(UserWarning, match=r"few.xyz: has 12 points, fewer than num_points=32; its cloud is all 12 "
                                         r"points plus 20 random repeats"):
        cloud = read_cloud(path, 32, min_points=11)
    assert cloud.shape == (32, 3)
