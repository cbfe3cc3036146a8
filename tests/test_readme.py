"""The README's Python examples run as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    namespace = {}
    for previous in BLOCKS[:index]:  # later examples may use names from earlier ones
        exec(compile(previous, f"README.md block {index}", "exec"), namespace)
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)
    printed = capsys.readouterr().out
    for expected in re.findall(r"#\s*\"(.+?)\"", BLOCKS[index]):  # quoted comments show printed text
        assert expected in printed
