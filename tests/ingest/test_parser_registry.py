"""The parser layer: the registry's choice, a real third-party plugin found through its entry point,
`rag formats`, and the shipped contract suite (rag.testing.parsers) run against every built-in parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rag.core.errors import ConfigError, LoaderError
from rag.ingest.loaders import load_file
from rag.ingest.parsers import ParseContext, ParseLimits, ParserRegistry
from rag.ingest.parsers.registry import BUILTIN_PARSERS
from rag.testing.parsers import ParserContractTests

# -- a real plugin distribution --------------------------------------------------------------------

PLUGIN_MODULE = '''
"""A third-party parser for ".recipe" files: "Name: value" lines, one section per "## " heading."""

from rag.core.errors import LoaderError
from rag.ingest.parsers import BaseParser, DocumentBuilder


class RecipeParser(BaseParser):
    name = "recipe"
    suffixes = (".recipe",)
    media_types = ("text/x-recipe",)
    description = "recipes: a section per step"

    def sniff(self, head):
        return None if head.startswith(b"RECIPE") else "not a recipe (no RECIPE header)"

    def parse(self, data, ctx):
        lines = data.decode("utf-8").splitlines()[1:]
        builder = DocumentBuilder()
        for line in lines:
            if line.startswith("## "):
                builder.heading(2, line[3:])
            elif line.strip():
                builder.paragraph(line)
        if builder.empty:
            raise LoaderError("an empty recipe")
        return [builder.build(doc_id=ctx.doc_id, source=ctx.source, title=ctx.stem,
                              metadata=ctx.merge_metadata({"cuisine": "test"}, format=self.name))]


class ShadowParser(RecipeParser):
    name = "markdown"  # tries to take a built-in's name
    suffixes = (".shadow",)


def broken():
    raise RuntimeError("this plugin cannot start")
'''

RECIPE = b"RECIPE\n## Dough\nMix 500 g flour with 300 ml water.\n## Bake\nBake at 230 degrees for 25 minutes.\n"


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site folder holding an installed distribution with `rag.parsers` entry points, first on sys.path,
    exactly as `pip install rag-recipe` would lay it out (importlib.metadata finds it by its dist-info)."""
    site = tmp_path / "site"
    (site / "rag_recipe").mkdir(parents=True)
    (site / "rag_recipe" / "__init__.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    dist = site / "rag_recipe-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rag-recipe\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[rag.parsers]\nrecipe = rag_recipe:RecipeParser\nshadow = rag_recipe:ShadowParser\nbroken = rag_recipe:broken\n"
    )
    monkeypatch.syspath_prepend(str(site))
    return site


def test_plugin_is_found_through_its_entry_point_and_parses(plugin_site: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    registry = ParserRegistry()
    assert registry.for_name("dinner.RECIPE").name == "recipe"
    assert registry.get("markdown").__class__.__name__ == "MarkdownParser", "a plugin cannot shadow a built-in"
    assert "taken by a built-in" in caplog.text and "cannot start" in caplog.text
    row = next(r for r in registry.formats() if r.name == "recipe")
    assert row.plugin and row.suffixes == (".recipe",) and row.unavailable is None

    path = tmp_path / "bread.recipe"
    path.write_bytes(RECIPE)
    (doc,) = load_file(path, doc_id="bread.recipe", source="bread.recipe", registry=registry)
    assert [s.headings for s in doc.sections] == [("Dough",), ("Bake",)]
    assert doc.metadata["cuisine"] == "test" and doc.metadata["format"] == "recipe"

    path.write_bytes(b"PLAIN\n" + RECIPE)
    with pytest.raises(LoaderError, match=r"^not a recipe \(no RECIPE header\)$"):
        load_file(path, doc_id="bread.recipe", source="bread.recipe", registry=registry)


def test_plugin_serves_rag_formats_and_rag_ingest(plugin_site: Path, tmp_path: Path) -> None:
    """The CLI in a fresh process sees the installed plugin: listed by `rag formats`, used by `rag ingest`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(plugin_site), *sys.path])}
    listed = subprocess.run([sys.executable, "-m", "rag.cli", "formats", "--json"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["recipe"]["plugin"] is True and rows["recipe"]["suffixes"] == [".recipe"]
    assert rows["markdown"]["plugin"] is False

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "bread.recipe").write_bytes(RECIPE)
    ingested = subprocess.run([sys.executable, "-m", "rag.cli", "ingest", "docs", "--json"], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=300)
    assert ingested.returncode == 0, ingested.stderr
    assert json.loads(ingested.stdout)["added"] == 1
    found = subprocess.run([sys.executable, "-m", "rag.cli", "search", "bake temperature", "--json", "-k", "1"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert found.returncode == 0, found.stderr
    (hit,) = json.loads(found.stdout)
    assert hit["metadata"]["format"] == "recipe" and hit["metadata"]["section"] == "Bake"


def test_overrides_pick_the_parser_for_a_suffix(plugin_site: Path) -> None:
    registry = ParserRegistry({".txt": "recipe", ".RECIPE2": "recipe"})
    assert registry.for_name("notes.txt").name == "recipe"
    assert registry.for_name("x.recipe2").name == "recipe"
    with pytest.raises(ConfigError, match=r"no parser named 'nope' for .md; installed: .*markdown"):
        ParserRegistry({".md": "nope"})
    with pytest.raises(ConfigError, match="starts with a dot"):
        ParserRegistry({"md": "markdown"})


def test_unsupported_and_unknown_names_have_reasons() -> None:
    registry = ParserRegistry(plugins=False)
    assert registry.unsupported_reason("a.xyz") == "unsupported file type .xyz"
    assert registry.unsupported_reason("Makefile") == "no file suffix (type unknown)"
    assert registry.unsupported_reason("A.MD") is None
    ctx = ParseContext(name="a.xyz", doc_id="a", source="a")
    with pytest.raises(LoaderError, match=r"^unsupported file type \.xyz$"):
        registry.parse(b"text", ctx)


def test_content_is_checked_against_the_suffix(tmp_path: Path) -> None:
    pdf = tmp_path / "report.txt"
    pdf.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    with pytest.raises(LoaderError, match=r"^binary file, not text \(the content is a PDF\)$"):
        load_file(pdf, doc_id="r", source="r")
    text = tmp_path / "notes.pdf"
    text.write_text("just some notes, not a PDF at all\n")
    with pytest.raises(LoaderError, match=r"^not a PDF \(unrecognised content\)$"):
        load_file(text, doc_id="n", source="n")


def test_file_size_limit_is_checked_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("word " * 300_000)
    with pytest.raises(LoaderError, match=r"^file of 1 MiB is larger than ingest.max_file_mb \(0.5\)$"):
        load_file(big, doc_id="b", source="b", limits=ParseLimits(max_file_mb=0.5))


def test_nesting_is_bounded(plugin_site: Path) -> None:
    """A parser that recurses into itself (a container inside a container ...) stops at max_depth."""
    registry = ParserRegistry(plugins=False)
    depths = []

    class Nesting:
        name, suffixes, media_types, description, extra = "nest", (".nest",), (), "nests", None

        def available(self):
            return None

        def sniff(self, head):
            return None

        def parse(self, data, ctx):
            depths.append(ctx.depth)
            return ctx.parse_child(data, "inner.nest", ctx.doc_id + "/inner")

    registry._parsers["nest"] = registry._by_suffix[".nest"] = Nesting()  # a parser object, registered directly
    with pytest.raises(LoaderError, match=r"^nested more than 2 deep \(ingest.max_depth\)$"):
        registry.parse(b"x", ParseContext(name="a.nest", doc_id="a", source="a", limits=ParseLimits(max_depth=2)))
    assert depths == [0, 1, 2]


def test_a_parser_crash_becomes_one_line(plugin_site: Path) -> None:
    registry = ParserRegistry(plugins=False)

    class Crashing:
        name, suffixes, media_types, description, extra = "crash", (".crash",), (), "crashes", None

        def available(self):
            return None

        def sniff(self, head):
            return None

        def parse(self, data, ctx):
            raise KeyError("xref table")

    registry._by_suffix[".crash"] = Crashing()
    with pytest.raises(LoaderError, match=r"^cannot parse as crash: KeyError: 'xref table'$"):
        registry.parse(b"x", ParseContext(name="a.crash", doc_id="a", source="a"))


def test_unavailable_parser_names_its_install(tmp_path: Path) -> None:
    registry = ParserRegistry(plugins=False)

    class NeedsExtra:
        name, suffixes, media_types, description, extra = "needs", (".needs",), (), "needs an extra", "fancy"

        def available(self):
            return "needs fancylib: pip install 'rag-platform[fancy]'"

        def sniff(self, head):
            return None

        def parse(self, data, ctx):  # pragma: no cover - never reached
            raise AssertionError

    registry._by_suffix[".needs"] = NeedsExtra()
    with pytest.raises(LoaderError, match=r"^needs files needs fancylib: pip install 'rag-platform\[fancy\]'$"):
        registry.parse(b"x", ParseContext(name="a.needs", doc_id="a", source="a"))


def test_rag_formats_lists_every_builtin(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "rag.cli", "formats"], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert result.returncode == 0, result.stderr
    names = [spec.rpartition(":")[2] for spec in BUILTIN_PARSERS]
    registry = ParserRegistry(plugins=False)
    for row in registry.formats():
        assert row.name in result.stdout and " ".join(row.suffixes) in result.stdout
    assert len(registry.formats()) == len(names)


# -- the shipped contract suite, run against the built-ins -----------------------------------------


class TestMarkdownContract(ParserContractTests):
    @pytest.fixture
    def parser(self):
        return ParserRegistry(plugins=False).get("markdown")

    @pytest.fixture
    def sample(self):
        return "guide.md", b"---\ntags: [a]\n---\n# Guide\n\nIntro.\n\n## Install\n\nRun pip.\n"


class TestTextContract(ParserContractTests):
    @pytest.fixture
    def parser(self):
        return ParserRegistry(plugins=False).get("text")

    @pytest.fixture
    def sample(self):
        return "notes.txt", "Notes\n\nThe caf\u00e9 opens at nine.\n".encode()


class TestHtmlContract(ParserContractTests):
    @pytest.fixture
    def parser(self):
        return ParserRegistry(plugins=False).get("html")

    @pytest.fixture
    def sample(self):
        return "page.html", b"<html><head><title>T</title></head><body><h1>Head</h1><p>Body text here.</p></body></html>"


class TestPdfContract(ParserContractTests):
    @pytest.fixture
    def parser(self):
        return ParserRegistry(plugins=False).get("pdf")

    @pytest.fixture
    def sample(self, make_pdf):
        return "doc.pdf", make_pdf(["First page text.", "Second page text."]).read_bytes()


class TestJsonlContract(ParserContractTests):
    @pytest.fixture
    def parser(self):
        return ParserRegistry(plugins=False).get("jsonl")

    @pytest.fixture
    def sample(self):
        return "corpus.jsonl", b'{"_id": "d1", "title": "One", "text": "first"}\n{"_id": "d2", "text": "second"}\n'


class TestRecipePluginContract(ParserContractTests):
    """A plugin author's use of the suite, with the plugin above."""

    @pytest.fixture
    def parser(self, plugin_site):
        return ParserRegistry().get("recipe")

    @pytest.fixture
    def sample(self):
        return "bread.recipe", RECIPE


def test_the_documented_plugin_example_works() -> None:
    """docs/ingestion.md's OrgParser, run as written: it parses, keeps headings and passes the registry."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "ingestion.md").read_text(encoding="utf-8")
    code = docs.split("### Writing a parser plugin", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "docs/ingestion.md", "exec"), namespace)  # noqa: S102 - our own documentation
    registry = ParserRegistry(plugins=False)
    registry._parsers["org"] = registry._by_suffix[".org"] = namespace["OrgParser"]()
    ctx = ParseContext(name="plan.org", doc_id="plan.org", source="plan.org", metadata={"team": "ops"})
    (doc,) = registry.parse(b"* Goals\nShip the parser layer.\n\n** Risks\nOCR speed on two cores.\n", ctx)
    assert [s.headings for s in doc.sections] == [("Goals",), ("Goals", "Risks")]
    assert "OCR speed on two cores." in doc.text and doc.metadata == {"team": "ops", "format": "org"}
