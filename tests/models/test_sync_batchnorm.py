"""Every BatchNorm of every registered model is a module that SyncBatchNorm conversion finds."""
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mgic_geo.complexity import count_parameters
from mgic_geo.models import create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_convert_sync_batchnorm_leaves_no_other_batchnorm(name):
    torch.manual_seed(0)
    model = create_model(name)
    params = count_parameters(model)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    left = [f"{path}: {type(module).__name__}" for path, module in converted.named_modules()
            if isinstance(module, _BatchNorm) and not isinstance(module, torch.nn.SyncBatchNorm)]
    assert not left, left
    # No batch-norm statistics live outside a _BatchNorm module (those conversion cannot see).
    hidden = [f"{path}.{buffer}" for path, module in converted.named_modules() if not isinstance(module, _BatchNorm)
              for buffer, _ in module.named_buffers(recurse=False) if buffer in ("running_mean", "running_var")]
    assert not hidden, hidden
    assert count_parameters(converted) == params
    assert converted.state_dict().keys() == state.keys()
    for key, value in converted.state_dict().items():
        assert torch.equal(value, state[key]), key
