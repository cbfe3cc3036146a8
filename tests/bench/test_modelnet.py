import pytest

from mgic_geo.bench.modelnet import bench_modelnet, make_batch
from mgic_geo.cli import main


def test_every_model_trains_on_the_same_batch_and_is_reported():
    rows = bench_modelnet(models=["mgic_diffgcn", "dgcnn"], batch=2, points=32, steps=1, warmup=0, device="cpu",
                          progress=False)
    assert [row["model"] for row in rows] == ["mgic_diffgcn", "dgcnn"]
    for row in rows:
        assert row["samples / s"] > 0 and row["ms / step"] > 0 and row["peak memory [MiB]"] >= 0
    assert rows[0]["throughput vs mgic_diffgcn"] == 1.0
    assert rows[1]["throughput vs mgic_diffgcn"] == round(rows[1]["samples / s"] / rows[0]["samples / s"], 2)


def test_knn_share_is_measured_two_ways():
    rows = bench_modelnet(models=["mgic_diffgcn", "dgcnn"], batch=2, points=32, steps=1, warmup=0, device="cpu",
                          progress=False, model_kwargs={"mgic_diffgcn": {"graph": "dynamic"}})
    assert [row["model"] for row in rows] == ["mgic_diffgcn graph=dynamic", "dgcnn"]
    # dynamic mgic_diffgcn: the stem's graph on positions and one per stage block; dgcnn: one per EdgeConv.
    assert [row["kNN graphs / step"] for row in rows] == [5, 4]
    for row in rows:
        assert 0 < row["kNN ms / step"] < row["ms / step"] and 0 < row["kNN share [%]"] < 100
        assert row["ms / step, graphs given"] > 0 and row["kNN share by given graphs [%]"] < 100
        assert "compiled ms / step" not in row


def test_compile_reports_speed_up_and_graph_breaks():
    (row,) = bench_modelnet(models=["dgcnn_pyg_example"], batch=2, points=32, steps=1, warmup=0, device="cpu",
                            progress=False, compile="eager")
    assert row["compiled ms / step"] > 0 and row["compile s"] > 0
    assert row["compile speed-up"] == pytest.approx(row["ms / step"] / row["compiled ms / step"], rel=0.02)
    assert isinstance(row["graph breaks"], int) and row["graph breaks"] >= 0  # zero: tests/models


def test_batches_are_reproducible_clouds_on_surfaces():
    import torch

    pos, batch, labels = make_batch(3, 50, seed=4, device=torch.device("cpu"))
    again = make_batch(3, 50, seed=4, device=torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip((pos, batch, labels), again))
    assert pos.shape == (150, 3) and batch.tolist() == sorted(batch.tolist()) and labels.shape == (3,)
    assert pos.norm(dim=1).max() <= 3**0.5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "pointnet"], r"`--models` must name models of the registry"),
        (["--batch", "0"], r"`--batch` must be a positive integer, got 0"),
        (["--warmup", "-1"], r"`--warmup` must be"),
        (["--compile", "no_such_backend", "--models", "dgcnn", "--batch", "1", "--points", "16", "--steps", "1",
          "--device", "cpu"], r"`--compile` must name a torch.compile backend .*got .no_such_backend."),
    ],
)
def test_bad_options_are_clear_errors(argv, message, capsys):
    import re

    assert main(["bench", "modelnet", *argv]) == 2
    assert re.search(message, capsys.readouterr().err)
