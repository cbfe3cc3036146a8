"""Streaming inference with a point-cloud classifier: the Python API behind ``mgic-geo predict``.

Clouds go through the network in batches, lazily: nothing but the current batch is held, so memory
stays flat however many clouds pass. A batch is PyG's flat layout, ``pos`` ``[sum N_i, 3]`` with a
``batch`` vector, so clouds of different sizes may share a batch; in eval mode every layer of the
registry's point-cloud networks works per cloud (kNN graphs per cloud, BatchNorm with running
statistics, subsampling by a hash of each point's position), so a cloud gets the same logits in any
batch as alone, up to float rounding (``mgic-geo predict --check-equal`` measures it).

- :func:`predict_clouds`: a lazy generator of per-cloud logits, in input order
  (:mod:`~mgic_geo.inference.stream`, with :func:`one_by_one` and :func:`set_batchnorm_statistics`);
- :func:`load_classifier`: a :class:`~mgic_geo.training.PointCloudClassifier` from a Lightning
  checkpoint, read with ``torch.load(weights_only=True)`` only (:mod:`~mgic_geo.inference.checkpoint`);
- :func:`render_clouds`: a picture of clouds as 3-D scatter plots titled with their predicted and
  true classes (:mod:`~mgic_geo.inference.render`);
- :class:`~mgic_geo.inference.monitor.MemoryMonitor`: the RSS of a long stream, sampled every few batches;
- :mod:`mgic_geo.inference.cli`: the ``mgic-geo predict`` command (CSV of predictions).

The clouds themselves come from :mod:`mgic_geo.data.clouds` (:func:`~mgic_geo.data.clouds.read_cloud`,
:func:`~mgic_geo.data.clouds.synthetic_clouds`, :func:`~mgic_geo.data.clouds.true_class`).

Example::

    >>> import torch
    >>> from mgic_geo.data.clouds import synthetic_clouds
    >>> from mgic_geo.inference import predict_clouds, set_batchnorm_statistics
    >>> from mgic_geo.models import create_model
    >>> _ = torch.manual_seed(0)
    >>> model = create_model("mgic_diffgcn", num_classes=10)
    >>> model = set_batchnorm_statistics(model, synthetic_clouds(8, num_points=64, seed=1))  # untrained: see there
    >>> logits = list(predict_clouds(model, synthetic_clouds(5, num_points=64), batch_size=2))
    >>> len(logits), tuple(logits[0].shape), logits[0].dtype
    (5, (10,), torch.float32)
    >>> alone = next(predict_clouds(model, synthetic_clouds(1, num_points=64), batch_size=1))
    >>> torch.allclose(alone, logits[0], atol=1e-4)
    True
"""
from mgic_geo.inference.checkpoint import load_classifier
from mgic_geo.inference.monitor import MemoryMonitor
from mgic_geo.inference.render import render_clouds
from mgic_geo.inference.stream import (class_names, fixed_points, min_points, one_by_one, predict_clouds,
                                       set_batchnorm_statistics)

__all__ = ["MemoryMonitor", "class_names", "fixed_points", "load_classifier", "min_points", "one_by_one",
           "predict_clouds", "render_clouds", "set_batchnorm_statistics"]
