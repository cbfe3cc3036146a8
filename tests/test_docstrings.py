"""The examples in docstrings run and print what they show."""
import doctest

import pytest

import mgic_geo.complexity
import mgic_geo.data.image_synthetic
import mgic_geo.data.images
import mgic_geo.data.modelnet
import mgic_geo.data.synthetic
import mgic_geo.models.registry
import mgic_geo.nn.knn
import mgic_geo.nn.mgic_conv
import mgic_geo.training.images

MODULES = [mgic_geo.complexity, mgic_geo.data.image_synthetic, mgic_geo.data.images, mgic_geo.data.modelnet,
           mgic_geo.data.synthetic, mgic_geo.models.registry, mgic_geo.nn.knn, mgic_geo.nn.mgic_conv,
           mgic_geo.training.images]


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
