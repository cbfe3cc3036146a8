"""The MGIC image networks export with ``torch.export`` (saved, loaded back) and match eager mode."""
import pytest
import torch

from mgic_geo.models import create_model


@pytest.mark.parametrize("name", ["mgic_resnet56", "mgic_mobilenetv3_large"])
def test_exported_program_matches_eager(name, tmp_path):
    model = create_model(name, num_classes=10).eval()
    example = torch.randn(2, 3, 32, 32)
    path = tmp_path / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (example,)), path)
    exported = torch.export.load(path).module()
    x = torch.randn(2, 3, 32, 32)  # new values, the exported shapes
    torch.testing.assert_close(exported(x), model(x), rtol=1e-5, atol=1e-5)
