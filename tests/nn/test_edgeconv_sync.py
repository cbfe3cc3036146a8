"""EdgeConvNormAct after SyncBatchNorm conversion: batch statistics over the edges of every process."""
import os
import socket

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


def run(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        layer, x = data()
        layer = torch.nn.SyncBatchNorm.convert_sync_batchnorm(layer)
        part = x[rank * 40:(rank + 1) * 40].clone().requires_grad_()
        y = layer(part, knn_graph(part, 5, torch.arange(2).repeat_interleave(20)), k=5)
        y.square().sum().backward()
        torch.save({"y": y.detach(), "grad": part.grad, "running_var": layer.norm.running_var,
                    "weight_grad": layer.norm.weight.grad}, os.path.join(out, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sync_batchnorm_reduces_the_statistics_over_processes(tmp_path):
    if not dist.is_available():
        import pytest
        pytest.skip("torch.distributed is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(run, args=(port, str(tmp_path)), nprocs=2, join=True)
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
