"""Every network of the package, behind one registry: ``create_model(name, **kwargs)``, ``list_models()``;
released weights: ``create_model(name, weights=...)``, ``list_weights()``, ``get_weight()``."""
from mgic_geo.models import dgcnn as _dgcnn  # noqa: F401  (registers the builders)
from mgic_geo.models import diffgcn as _diffgcn  # noqa: F401
from mgic_geo.models import lraspp as _lraspp  # noqa: F401
from mgic_geo.models import mobilenetv3 as _mobilenetv3  # noqa: F401
from mgic_geo.models import resnet as _resnet  # noqa: F401
from mgic_geo.models.dgcnn import DGCNN, PyGExampleDGCNN
from mgic_geo.models.diffgcn import DiffGCNNet
from mgic_geo.models.registry import create_model, list_models, model_task, register_model
from mgic_geo.models.weights import (
    MGICDiffGCN_Weights,
    Weights,
    WeightsEnum,
    WeightsError,
    get_model_weights,
    get_weight,
    list_weights,
)

__all__ = ["DGCNN", "DiffGCNNet", "MGICDiffGCN_Weights", "PyGExampleDGCNN", "Weights", "WeightsEnum", "WeightsError",
           "create_model", "get_model_weights", "get_weight", "list_models", "list_weights", "model_task",
           "register_model"]
