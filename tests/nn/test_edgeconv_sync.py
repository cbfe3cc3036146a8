"""EdgeConvNormAct after SyncBatchNorm conversion: batch statistics over the edges of every process."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mgic_geo.nn import EdgeConvNormAct, knn_graph


def data():
    torch.manual_seed(0)
    layer = EdgeConvNormAct(6, 10).double()
    with torch.no_grad():
        layer.norm.weight.copy_(torch.randn(10))
    x = torch.randn(80, 6, dtype=torch.float64)
    return layer, x


def run(rank, out):
    torch.set_num_threads(1)
    # a file store: no port to pick, so no race with other processes for it
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out, 'store')}", rank=rank, world_size=2)
    try:
        layer, x = data()
        layer = torch.nn.SyncBatchNorm.convert_sync_batchnorm(layer)
        part = x[rank * 40:(rank + 1) * 40].clone().requires_grad_()
        y = layer(part, knn_graph(part, 5, torch.arange(2).repeat_interleave(20)), k=5)
        y.square().sum().backward()
        torch.save({"y": y.detach(), "grad": part.grad, "running_var": layer.norm.running_var,
                    "weight_grad": layer.norm.weight.grad}, os.path.join(out, f"{rank}.pt"))
        dist.barrier()  # both results are written before either process leaves the group
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's teardown: gloo's background threads can abort it
    # ("terminate called without an active exception", SIGABRT) after the work is done and saved.
    os._exit(0)


def test_sync_batchnorm_reduces_the_statistics_over_processes(tmp_path):
    if not dist.is_available():
        import pytest
        pytest.skip("torch.distributed is not available")
    mp.spawn(run, args=(str(tmp_path),), nprocs=2, join=True)
    layer, x = data()
    x.requires_grad_()
    y = layer(x, knn_graph(x, 5, torch.arange(4).repeat_interleave(20)), k=5)
    y.square().sum().backward()
    ranks = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach())
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]), x.grad)
    torch.testing.assert_close(ranks[0]["running_var"], layer.norm.running_var)
    # DDP averages the parameter gradients of the ranks; summed they are the full batch's.
    torch.testing.assert_close(ranks[0]["weight_grad"] + ranks[1]["weight_grad"], layer.norm.weight.grad)
