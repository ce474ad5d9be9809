"""The docs: the generated reference pages name everything the code has, and the README stays a front door.

The site itself is built with `mkdocs build --strict` by `make docs` (and so by `make test`), which fails
on a broken link or anchor; these tests hold the generated pages to the code they are generated from,
reading the code another way than the generator does.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import gen_docs  # noqa: E402 - scripts/ is not a package


def _section(page: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same level."""
    level = heading.split(" ", 1)[0]
    start = page.index(heading + "\n")
    end = page.find(f"\n{level} ", start + len(heading))
    return page[start:end if end != -1 else None]


def test_settings_page_names_every_key(settings):
    page = gen_docs.settings_page()
    keys = settings.resolved()  # the flat view every run logs
    assert len(keys) > 100
    missing = [k for k in keys if f"| `{k}` |" not in page]
    assert not missing, f"the settings reference lacks {missing}"
    for section in type(settings).model_fields:
        assert f"\n## {section}\n" in page
    # a dict-valued key flattens to nothing in resolved(); the page names it all the same
    assert "| `model.params` | table | `{}` |" in page


@pytest.mark.parametrize("key, kind, default", [
    ("drift.p_val", "float, &gt; 0, &lt; 1", "`0.05`"),
    ("policy.drift_cusum_retrains_per_200_nights", "float or unset, &gt; 0, ≤ 50", "`0.1`"),
    ("gate.margin", "float or unset, ≥ 0", "unset"),
    ("dataset.entity_id", "str", "required"),
    ("training.drift_candidates", "list of str", '`["warm:sliding", "warm:recent", "scratch:recent"]`'),
    ("paths.home", "str", '`"<repo>/.nightshift"`'),  # the machine's own path never reaches the page
])
def test_settings_page_shows_types_bounds_and_defaults(key, kind, default):
    row = next(line for line in gen_docs.settings_page().splitlines() if line.startswith(f"| `{key}` |"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[1:3] == [kind, default], row


def test_settings_page_shows_placeholders_as_text():
    row = next(line for line in gen_docs.settings_page().splitlines() if line.startswith("| `paths.lake` |"))
    assert row.endswith("| default: &lt;home&gt;/lake |")  # not an HTML tag the browser would swallow


def test_settings_descriptions_fall_back_to_comments_and_choices():
    from nightshift.settings import ModelSettings, TrainingSettings

    rows = {r["key"]: r for r in gen_docs.settings_rows(ModelSettings, "model")}
    assert rows["model.name"]["description"] == "the MLflow registered model name"  # a trailing comment
    init = next(r for r in gen_docs.settings_rows(TrainingSettings, "training") if r["key"] == "training.init_from")
    assert init["description"] == "Where a retrain's weights start."  # the choice's enum docstring
    assert init["type"] == '"scratch" or "warm" or "transfer"'


def test_cli_page_names_every_subcommand_and_flag():
    from cli.main import build_parser

    page = gen_docs.cli_page()
    parser = build_parser()
    commands = re.search(r"\{([\w,-]+)\}", parser.format_usage()).group(1).split(",")
    assert {"import", "nightly", "retrain", "replay-policy", "settings"} <= set(commands)
    for name in commands:
        section = _section(page, f"## nightshift {name}")
        sub = parser._subparsers._group_actions[0].choices[name]
        flags = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", sub.format_help())) - {"-h", "--help"}
        missing = [f for f in flags if f"`{f}" not in section and f", {f}" not in section]
        assert not missing, f"nightshift {name}: the CLI reference lacks {missing}"
    assert "`--set policy.KEY=VALUE`" in page and "repeatable" in _section(page, "## nightshift replay-policy")
    assert "not with `--label-time-col`" in _section(page, "## nightshift import")  # the exclusive pair


def test_lake_page_names_every_table_and_column():
    import importlib

    from nightshift import lake
    from nightshift.tables import aliases, predictions

    page = gen_docs.lake_page()
    for table in lake.TABLES:
        assert f"\n## {table}\n" in page
    for table, name in [(lake.DRIFT, "drift"), (lake.PERFORMANCE, "performance"), (lake.DECISIONS, "decisions")]:
        schema = importlib.import_module(f"nightshift.tables.{name}").SCHEMA
        section = _section(page, f"## {table}")
        missing = [f.name for f in schema if f"| `{f.name}` | `{f.type}` |" not in section]
        assert not missing, f"{name}: the lake reference lacks {missing}"
    section = _section(page, "## predictions")
    assert all(f"| `{c}` | `string` |" in section for c in predictions.LINEAGE)
    assert "| `score` | `double` |" in section and "| `p__<class>` | `double` |" in section
    assert all(f"| `{f}` |" in page for f in aliases.AliasEvent.__dataclass_fields__)


def test_a_lake_table_the_generator_cannot_document_fails_the_build(monkeypatch):
    from nightshift import lake

    monkeypatch.setattr(lake, "TABLES", (*lake.TABLES, "monitoring/mystery"))
    with pytest.raises(RuntimeError, match="monitoring/mystery.*TABLE_MODULES"):
        gen_docs.lake_page()


def test_pages_are_the_same_on_every_build():
    assert gen_docs.pages() == gen_docs.pages()


def test_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make demo" in readme and "make test" in readme
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local)
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
