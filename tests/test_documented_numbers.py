"""Numbers the documents quote, checked against where they come from: the
bench's committed JSON (``benchmarks/published/``, through the markers of
``benchmarks/readme_tables.py``) and the estimator checks' declarations.
"""

import importlib.util
import re
from pathlib import Path

import pytest

from .test_common import ESTIMATORS, _expected_failed_checks

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "benchmarks" / "published"

#: Documents whose marked tables are checked.
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").rglob("*.rst")),
    *sorted((ROOT / "docs").rglob("*.md")),
]
#: Documents that state how many expected failures the estimator checks
#: declare, in words ("ten per-check expected failures").
STATE_THE_EXPECTED_FAILURES = [ROOT / "README.md", ROOT / "docs" / "development.rst"]

NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def _readme_tables():
    spec = importlib.util.spec_from_file_location(
        "readme_tables", ROOT / "benchmarks" / "readme_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


readme_tables = _readme_tables()


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_marked_tables_say_what_the_committed_json_says(document):
    assert readme_tables.check(document) == []


def test_a_stale_number_is_named_with_the_right_one(tmp_path):
    source = PUBLISHED / "bench" / "oxford_flowers.json"
    made = readme_tables.accuracy([source]).splitlines()
    row = next(line for line in made if line.startswith("| linear probe |"))
    stale = row.replace(row.split("|")[2], " 12.34 ± 0.56 ")
    marker = (
        "<!-- table: accuracy from benchmarks/published/bench/oxford_flowers.json -->"
    )
    document = tmp_path / "doc.md"
    document.write_text("\n".join(["text", marker, *made[:2], row, "", "text"]))
    assert readme_tables.check(document) == []
    document.write_text("\n".join([marker, *made[:2], stale]))
    (problem,) = readme_tables.check(document)
    assert "doc.md:1: 'accuracy' row 'linear probe | 12.34 ± 0.56 |" in problem
    assert f"it gives '{' | '.join(c.strip() for c in row.strip('|').split('|'))}'" in (
        problem
    )
    document.write_text(marker.replace("oxford_flowers", "missing") + "\n| a |")
    assert "do not exist" in readme_tables.check(document)[0]
    document.write_text(marker.replace("accuracy", "accuracies"))
    assert "no table 'accuracies'" in readme_tables.check(document)[0]


def test_the_committed_json_says_how_busy_the_machine_was():
    sources = sorted(PUBLISHED.rglob("*.json"))
    assert sources
    for source in sources:
        conditions = readme_tables.read(source)[2]
        assert conditions["machine"] and conditions["load"]["description"], source


def test_the_documents_state_the_true_count_of_expected_failures():
    count = sum(len(_expected_failed_checks(e)) for e in ESTIMATORS)
    for document in STATE_THE_EXPECTED_FAILURES:
        stated = re.findall(
            r"(\w+)\s+per-check\s+expected\s+failures", document.read_text()
        )
        assert stated, f"{document} no longer states the count"
        assert stated == [NUMBERS[count]] * len(stated), (document, stated, count)
