import pytest

from mgic_geo.tables import markdown_table, write_table


def test_markdown_table_formats_numbers():
    text = markdown_table([{"c": 64, "ratio": 3.55712, "MACs": 38654.7}])
    assert text.splitlines() == ["| c | ratio | MACs |", "|---|---|---|", "| 64 | 3.557 | 38655 |"]


def test_empty_table_is_an_error():
    with pytest.raises(ValueError, match="without rows"):
        markdown_table([])


def test_write_table_writes_markdown_and_csv(tmp_path):
    rows = [{"a": 1, "b": 2.5}, {"a": 2, "b": 0.25}]
    md_path, csv_path, text = write_table(rows, tmp_path / "new", "t", title="T", notes=["a note"])
    assert md_path.read_text() == text
    assert text.startswith("## T\n\n| a | b |") and text.endswith("- a note\n")
    assert csv_path.read_text().splitlines() == ["a,b", "1,2.5", "2,0.25"]
