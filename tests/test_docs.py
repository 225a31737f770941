"""The documentation as a map: README.md stays short and lists every endpoint the app serves, every link in
README.md and docs/*.md reaches a file (and heading) that exists, every curl example names a real route, and
`make bench` keeps the figures other scripts measured."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from flask import Flask

from service.app import create_app, shutdown
from service.settings import Settings
from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAPS = [README, *DOCS, ROOT / "k8s" / "README.md"]
README_MAX_LINES = 150
# [text](target) and <img src="target">, outside code blocks; a target with a scheme leaves the repository.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def prose(path: Path) -> str:
    """The Markdown outside fenced code blocks (a link in a shell example is not a link)."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(path).splitlines() if re.match(r"^#{1,6} ", line)}


def links(path: Path) -> Iterator[str]:
    for match in LINK.finditer(prose(path)):
        target = match.group(1) or match.group(2)
        if not EXTERNAL.match(target):
            yield target


@pytest.mark.parametrize("page", MAPS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_an_existing_file_and_heading(page: Path) -> None:
    for target in links(page):
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        assert destination.exists(), f"{page.relative_to(ROOT)} links to {target}: no such file"
        if anchor and destination.suffix == ".md":
            where = f"{page.relative_to(ROOT)} links to {target}"
            assert anchor in anchors(destination), f"{where}: no such heading"


def test_every_doc_page_is_reachable_from_the_readme() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(README)}
    for page in DOCS:
        assert page.resolve() in linked, f"README.md does not link to {page.relative_to(ROOT)}"


def test_readme_is_a_short_map() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_sections_are_headings_not_bold_paragraph_openers(page: Path) -> None:
    """`**Topic.** text` hides a section from the outline and from links; a `##` heading does not."""
    openers = re.findall(r"^\*\*[^*]+\*\*", prose(page), flags=re.M)
    assert not openers, f"{page.relative_to(ROOT)}: make these headings: {openers}"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """The real app with the shipped models and a throwaway SQLite store, for its URL map."""
    folder = tmp_path_factory.mktemp("docs-app")
    settings = Settings(
        store_url=f"sqlite:///{folder / 'predictions.db'}",
        spool_dir=folder / "spool",
        model_dir=ROOT / "models",
    )
    app = create_app(settings)
    yield app
    shutdown(app, timeout=5.0)


def served_routes(app: Flask) -> set[tuple[str, str]]:
    """(method, rule) of every endpoint, without the HEAD and OPTIONS Flask adds to each; the TF Serving
    routes' `<model:name>` (a name without ':') is the `<name>` a reader sees."""
    return {
        (method, rule.rule.replace("<model:", "<"))
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def test_readme_api_table_lists_exactly_the_served_endpoints(app: Flask) -> None:
    api = README.read_text().split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| (GET|POST|PUT|DELETE|PATCH) \| `([^`]+)` \|", api, flags=re.M))
    served = served_routes(app)
    assert served - listed == set(), "endpoints missing from README.md's API table"
    assert listed - served == set(), "README.md's API table lists endpoints the app does not serve"


def curl_examples(path: Path) -> Iterator[tuple[str, str]]:
    """(method, path) of each `curl ... $URL/...` line of the page's shell examples."""
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        for command in line.split(";"):
            if not command.strip().startswith("curl"):
                continue
            target = re.search(r"\$URL(/[^\s\"'?]*)", command)
            if target:
                sends_body = re.search(r"\s(-d|-F|--data-binary)\s", command)
                named = re.search(r"\s-X\s+([A-Z]+)\s", command)
                yield (named.group(1) if named else "POST" if sends_body else "GET"), target.group(1)


def test_every_curl_example_in_the_api_reference_names_a_served_route(app: Flask) -> None:
    examples = list(curl_examples(ROOT / "docs" / "api.md"))
    assert len(examples) > 20, examples
    urls = app.url_map.bind("localhost")
    for method, path in examples:
        urls.match(path.replace("<id>", "0" * 32), method=method)  # raises NotFound / MethodNotAllowed


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_bench_keeps_the_section_other_scripts_measured(tmp_path: Path) -> None:
    bench = load_bench()
    report = tmp_path / "BENCHMARKS.md"
    assert bench.kept_by_hand(report) == ""
    kept = f"{bench.BY_HAND}\n\n### Cassandra\n\nfigures\n"
    report.write_text(f"# Benchmarks\n\nold run\n\n{kept}")
    assert bench.kept_by_hand(report) == f"\n{kept}"
    assert bench.BY_HAND in (ROOT / "BENCHMARKS.md").read_text().splitlines()
