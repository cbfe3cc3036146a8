import csv
import re
from pathlib import Path

import pytest
import torch

from mgic_geo.cli import main
from mgic_geo.complexity import profile
from mgic_geo.experiments.fidelity import (READINGS, TRANSFER_ROLES, Fidelity, gaps, measure_all, paper_rows,
                                           within)
from mgic_geo.experiments.fidelity_report import report, summary
from mgic_geo.experiments.image_tables import TABLES
from mgic_geo.experiments.table6 import PAPER
from mgic_geo.models import create_model

READING = {reading.name: reading for reading in READINGS}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "fidelity.md"


@pytest.fixture(scope="module")
def table2():
    rows = paper_rows(("2",))
    return rows, measure_all(rows, Fidelity())


def test_every_paper_row_of_tables_2_to_8_is_listed_once():
    rows = paper_rows()
    expected = sum(len(entries) for *_, entries in TABLES.values()) + sum(p[2] is not None for p in PAPER)
    assert len(rows) == expected == len({row.name for row in rows})
    assert [row.table for row in rows] == sorted((row.table for row in rows), key=int)


def test_unknown_table_is_named():
    with pytest.raises(ValueError, match="--tables: no table 9; the tables are 2, 3, 4, 5, 6, 7 and 8"):
        paper_rows(("2", "9"))


def test_default_reading_is_the_profile_of_the_table_network(table2):
    rows, measured = table2
    mgic = next(row for row in rows if row.has_mgic)
    result = measured[(mgic.name, "Algorithm 1")]
    with torch.device("meta"):
        expected = profile(create_model(mgic.model, num_classes=10, **mgic.kwargs), torch.empty(1, 3, 32, 32))
    assert (result.params, result.macs) == (expected.params, expected.macs)
    assert gaps(mgic, result) == pytest.approx((expected.params / 0.41e6 - 1, expected.macs / 60e6 - 1))


def test_eq8_count_leaves_out_exactly_the_transfers(table2):
    rows, measured = table2
    mgic = next(row for row in rows if row.has_mgic)
    full, eq8 = measured[(mgic.name, "Algorithm 1")], measured[(mgic.name, "Algorithm 1, Eq. (8) count")]
    transfers = sum(p["macs"] for p in full.parts if p["role"] in TRANSFER_ROLES)
    assert transfers > 0 and eq8.macs == full.macs - transfers and eq8.params == full.params


def test_level_rule_readings_build_their_rule(table2):
    rows, measured = table2
    mgic = next(row for row in rows if row.has_mgic)
    official = measured[(mgic.name, "authors' code")]
    with torch.device("meta"):
        model = create_model("mgic_resnet56", mgic={"group_size": 8, "coarsest": 16, "level_rule": "official"})
        expected = profile(model, torch.empty(1, 3, 32, 32))
    assert (official.params, official.macs) == (expected.params, expected.macs)


def test_readings_apply_only_where_they_mean_something(table2):
    rows, measured = table2
    plain = next(row for row in rows if not row.has_mgic)
    applied = {name for (row, name), value in measured.items() if row == plain.name and value is not None}
    assert applied == {"Algorithm 1"}
    mgic = next(row for row in rows if row.has_mgic)
    assert measured[(mgic.name, "s_g, s_c on the outer width")] is None  # a ResNet-50 reading
    assert measured[(mgic.name, "dense transitions")] is None  # a MobileNetV3 reading


def test_outer_width_reading_divides_the_bottleneck_settings_by_four():
    row = next(row for row in paper_rows(("3",)) if row.has_mgic)
    assert READING["s_g, s_c on the outer width"].change_kwargs(row)["mgic"] == {"group_size": 8, "coarsest": 16}


def test_graph_operator_reading_adds_the_operators_of_the_profile():
    row = next(row for row in paper_rows(("6",)) if row.model == "mgic_diffgcn")
    fidelity = Fidelity()
    plain, counted = fidelity.measure(row, READING["Algorithm 1"]), fidelity.measure(row, READING["graph operators counted"])
    cloud = torch.randn(1024, 3, generator=torch.Generator().manual_seed(0))
    operators = profile(create_model("mgic_diffgcn", num_classes=10), cloud).graph_operator_macs
    assert operators > 0 and counted.macs == plain.macs + operators


def test_report_explains_every_row_no_reading_brings_within_tolerance(table2):
    rows, measured = table2
    text = report(rows, measured)
    mgic = next(row for row in rows if row.has_mgic)
    assert not any(within(mgic, measured[(mgic.name, r.name)]) for r in READINGS)
    section = text.split(f"### T2 {mgic.label}")[1].split("###")[0]
    assert "The same under every level rule" in section and "By stage:" in section and "By role:" in section
    # the stage 0 of (8, 16) is one fully coupled level under the paper's rule: its MACs are named
    assert "stage 0 coarsest block 42.5 M" in section
    assert "### T2 ResNet-56:" not in text  # within tolerance: no section
    assert "- **Table 2**:" in text


def test_cli_writes_the_report_and_the_csv(tmp_path, capsys):
    assert main(["experiment", "fidelity", "--tables", "2", "--out", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    with (tmp_path / "fidelity.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    assert {line["reading"] for line in lines} == {"Algorithm 1", "Sec. 4.1", "authors' code",
                                                   "Algorithm 1, Eq. (8) count", "authors' code, Eq. (8) count"}
    assert (tmp_path / "fidelity.md").read_text().startswith("# Paper fidelity")


def test_docs_report_shows_the_figures_measured_today(table2):
    """docs/fidelity.md was written by the command on today's networks (Table 2's lines are compared)."""
    rows, measured = table2
    documented = DOCS.read_text()
    for line in summary(rows, measured):
        cells = [line[key] for key in ("table", "network", "paper params [M] / FLOPs", "Algorithm 1", "Sec. 4.1",
                                       "authors' code")]
        assert re.search(r"\| " + r" \| ".join(re.escape(cell) for cell in cells) + r" \|", documented), line
