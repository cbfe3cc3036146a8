"""The examples in docstrings run and print what they show."""
import doctest

import pytest

import mgic_geo.complexity
import mgic_geo.nn.knn


@pytest.mark.parametrize("module", [mgic_geo.complexity, mgic_geo.nn.knn])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
