"""The documentation matches the code: generated reference pages are current, links resolve, and the
module paths the docs name exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from featurectl.reference import DOCS, PAGES

ROOT = Path(__file__).resolve().parents[2]
NOT_MODULES = {"featurectl.dlq", "featurectl.env"}  # a topic and a file that read like module paths
PAGES_MD = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("name", sorted(PAGES))
def test_generated_reference_pages_are_current(name: str) -> None:
    assert (DOCS / name).read_text() == PAGES[name](), (
        f"docs/{name} differs from the code: run `.venv/bin/python -m featurectl.reference` and commit it"
    )


@pytest.mark.parametrize("page", PAGES_MD, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_named_files_exist(page: Path) -> None:
    text = page.read_text()
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://", "mailto:")) and not (page.parent / target).exists():
            missing.append(f"link {target}")
    # Paths of this repository's code the text names, e.g. `stores/postgres/sink.py` or streams/events.py.
    for path in set(re.findall(r"(?<![\w/.-])((?:[a-z_]+/)+[a-z_]+\.(?:py|json|sql|yaml|yml|md))\b", text)):
        if (
            path.split("/")[0] in {p.name for p in ROOT.iterdir() if p.is_dir()}
            and not (ROOT / path).exists()
        ):
            missing.append(f"file {path}")
    assert not missing, f"{page.relative_to(ROOT)} names what does not exist: {missing}"


def test_docs_name_only_modules_that_exist() -> None:
    """Dotted module paths (``stores.postgres.feast.PgVectorOnlineStore``) in the docs import."""
    import importlib

    tops = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    wrong = []
    for page in PAGES_MD:
        for dotted in set(re.findall(r"`((?:[a-z_]+\.)+[A-Za-z_]+)`", page.read_text())):
            if dotted.split(".")[0] not in tops:
                continue
            if dotted in NOT_MODULES:
                continue
            module, _, attr = dotted.rpartition(".")
            try:
                found = hasattr(importlib.import_module(module), attr)
            except ImportError:
                found = False
            if not found:
                try:
                    importlib.import_module(dotted)
                    found = True
                except ImportError:
                    found = False
            if not found:
                wrong.append(f"{page.name}: {dotted}")
    assert not wrong, wrong


def test_readme_performance_table_is_its_records() -> None:
    """README's Performance table is the chain's record it names, which says its commit, date and machine."""
    from bench.record import readme_block, readme_record

    record, block = readme_record((ROOT / "README.md").read_text())
    assert record.exists(), f"README's Performance table names {record}, which is not in the repository"
    head = record.read_text().split("\n\n", 1)[0]
    for field in ("commit: ", "date: ", "machine: ", "command: "):
        assert f"\n{field}" in head, f"{record.name} lacks its {field!r} line"
    assert block == readme_block(record), (
        f"README's Performance table differs from {record.name}: run `.venv/bin/python -m bench.record "
        f"{record.relative_to(ROOT)}` and commit it"
    )


def test_the_store_list_is_the_store_folders() -> None:
    """docs/stores.md names every store folder and has one row per store in its table of `online_store.type`s
    (the canonical name, and whether it indexes vectors); ARCHITECTURE.md names each store."""
    from stores.registry import kinds

    stores_md = (DOCS / "stores.md").read_text()
    intro = stores_md.split("\n## ")[0]
    table = {
        row.group(1): row.group(2)
        for row in re.finditer(r"^\| `([\w.]+)`[^|]*\| [^|]+\| ([^|]+)\|", stores_md, re.M)
        if row.group(1).startswith("stores.")
    }
    architecture = (ROOT / "ARCHITECTURE.md").read_text()
    for kind in kinds():
        assert f"{kind.name}/" in intro, f"docs/stores.md's first paragraph does not name stores/{kind.name}/"
        assert kind.canonical in table, f"docs/stores.md's table has no row for {kind.canonical}"
        vectors = table[kind.canonical].strip()
        assert (vectors.startswith("none")) is (kind.vectors is None), (kind.name, vectors)
        assert kind.label.split(" ")[0] in architecture, (
            f"ARCHITECTURE.md does not name the {kind.label} store"
        )
    assert set(table) == {k.canonical for k in kinds()}, (
        "docs/stores.md's table names a store that has no folder"
    )


def test_adding_a_store_names_every_file_of_a_store_folder() -> None:
    """The checklist (docs/stores.md, "Adding a store") names each module the store folders have."""
    from stores.registry import kinds

    checklist = (DOCS / "stores.md").read_text().split("## Adding a store")[1].split("\n## ")[0]
    files = {p.name for k in kinds() for p in (ROOT / "stores" / k.name).glob("*.py")}
    # A store's own helpers (its tables, its layout) are its business; these are what the declaration names.
    declared = {
        "__init__.py",
        "feast.py",
        "sink.py",
        "reembed.py",
        "errors.py",
        "probe.py",
        "server.py",
        "settings.py",
    }
    assert declared <= files
    missing = [name for name in sorted(declared) if f"`{name}`" not in checklist]
    assert not missing, f"docs/stores.md's checklist does not name {missing}"
