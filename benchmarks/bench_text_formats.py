"""Text formats before/after issue 14: Markdown heading coverage and speed, HTML boilerplate and recall, RST.

The baseline is the parser modules as they were where this branch left ``main`` (``git merge-base``),
loaded from git in the same run, so both sides read the same files on the same machine.

    python -m rag.benchmarks.bench_text_formats --json benchmarks/results/text_formats.json

Corpora (all read-only, nothing downloaded): this repository's ``docs/*.md``; Markdown, RST and HTML files
shipped inside the Python environment's site-packages and ``/usr/share/doc``; and seven generated pages
that share a Node.js-style sidebar (``div role="navigation"``), a cookie banner and a ``div`` footer.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from rag.core.types import Document
from rag.ingest.parsers.base import ParseContext
from rag.ingest.parsers.html import HtmlParser
from rag.ingest.parsers.markdown import MarkdownParser
from rag.ingest.parsers.rst import RstParser

REPO = Path(__file__).resolve().parent.parent
SITE = Path(sysconfig.get_paths()["purelib"])
SENTENCE = re.compile(r"[^.!?\n]{30,}[.!?]")

SIDEBAR = '<div role="navigation" class="sidebar"><ul>' + "".join(
    f'<li><a href="/api/{name}.html">{name}</a></li>' for name in
    ("Assertion testing", "Buffer", "Child processes", "Cluster", "Crypto", "File system", "HTTP", "Streams")
) + "</ul></div>"
COOKIE = '<div class="cookie-banner">We use cookies to give you the best experience. Accept all cookies?</div>'
FOOTER = '<div class="footer">Copyright OpenJS Foundation and Node.js contributors. All rights reserved.</div>'
BOILERPLATE_MARKERS = ("Child processes", "We use cookies", "OpenJS Foundation")


def old_parser(module: str, cls: str) -> type:
    """The parser class as it was at the merge base with main, loaded from git."""
    base = subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", "main"], capture_output=True, text=True,
                          check=True).stdout.strip()
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{base}:ingest/parsers/{module}.py"],
                            capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader(f"old_{module}", loader=None)
    assert spec is not None
    namespace = importlib.util.module_from_spec(spec)
    exec(compile(source, f"old/{module}.py", "exec"), namespace.__dict__)  # noqa: S102 - our own history
    return getattr(namespace, cls)


def parse_all(parser: object, files: list[Path]) -> tuple[list[Document | None], float]:
    docs: list[Document | None] = []
    if files:  # warm up: the first call imports the parsing library (docutils, trafilatura, markdown-it)
        try:
            parser.parse(files[0].read_bytes(), ParseContext(name=files[0].name, doc_id="d", source="warm-up"))
        except Exception:  # noqa: BLE001, S110 - a parser that fails here fails in the timed loop, which counts it
            pass
    started = time.perf_counter()
    for path in files:
        try:
            docs.append(parser.parse(path.read_bytes(), ParseContext(name=path.name, doc_id="d", source=str(path)))[0])
        except Exception:  # noqa: BLE001 - a failure counts as no document; the share is reported
            docs.append(None)
    return docs, time.perf_counter() - started


def mb_per_s(files: list[Path], seconds: float) -> float:
    return sum(p.stat().st_size for p in files) / 1e6 / max(seconds, 1e-9)


def heading_share(docs: list[Document | None]) -> tuple[float, int, int]:
    """Share of section characters under some heading, sections that have a heading, documents parsed."""
    total = under = parsed = headed = 0
    for doc in docs:
        if doc is None:
            continue
        parsed += 1
        for section in doc.sections:
            total += len(section.text)
            under += len(section.text) if section.headings else 0
            headed += bool(section.headings)
    return (under / total if total else 0.0), headed, parsed


def sentences(text: str) -> set[str]:
    return {" ".join(s.split()) for s in SENTENCE.findall(text)}


def bench_markdown() -> dict[str, object]:
    files = sorted(REPO.glob("docs/*.md")) + sorted(p for p in SITE.rglob("*.md") if p.stat().st_size > 2000)
    files += sorted(p for p in Path("/usr/share/doc").rglob("*.md") if p.is_file())
    old_docs, old_s = parse_all(old_parser("markdown", "MarkdownParser")(), files)
    new_docs, new_s = parse_all(MarkdownParser(), files)
    return {"files": len(files), "mb": sum(p.stat().st_size for p in files) / 1e6,
            "old_under_heading": heading_share(old_docs), "new_under_heading": heading_share(new_docs),
            "old_mb_s": mb_per_s(files, old_s), "new_mb_s": mb_per_s(files, new_s)}


def bench_rst() -> dict[str, object]:
    files = sorted(p for p in SITE.rglob("*.rst") if p.stat().st_size > 1000)
    files += sorted(p for p in Path("/usr/share/doc").rglob("*.rst") if p.is_file())
    new_docs, new_s = parse_all(RstParser(), files)
    tables = sum(1 for d in new_docs if d for s in d.sections if s.table)
    return {"files": len(files), "new_under_heading": heading_share(new_docs), "tables": tables,
            "new_mb_s": mb_per_s(files, new_s)}


def bench_html_real(limit: int) -> dict[str, object]:
    files = sorted(Path("/usr/share/doc").rglob("*.html"))[:limit] + sorted(SITE.rglob("*.html"))
    files = [p for p in files if p.is_file() and p.stat().st_size > 1500][:limit]
    old_docs, old_s = parse_all(old_parser("html", "HtmlParser")(), files)
    new_docs, new_s = parse_all(HtmlParser(), files)
    kept = total = 0
    worst: list[tuple[float, str]] = []
    for path, old, new in zip(files, old_docs, new_docs):
        if old is None:
            continue
        old_set = sentences(old.text)
        new_text = " ".join((new.text if new else "").replace("|", " ").split())
        hits = sum(1 for s in old_set if s in new_text)
        kept, total = kept + hits, total + len(old_set)
        worst.append((hits / len(old_set) if old_set else 1.0, str(path)))
    return {"pages": len(files), "old_sentences_kept": kept / total if total else 1.0, "old_sentences": total,
            "worst_pages": sorted(worst)[:3], "old_mb_s": mb_per_s(files, old_s),
            "new_mb_s": mb_per_s(files, new_s)}


def bench_boilerplate(tmp: Path) -> dict[str, object]:
    tmp.mkdir(parents=True, exist_ok=True)
    files = []
    for index, topic in enumerate(("Buffer", "Crypto", "Events", "HTTP", "Path", "Streams", "Timers")):
        body = "".join(
            f"<h2>{topic} part {n}</h2><p>The {topic.lower()} module, section {n}, explains how the API behaves "
            f"when called with option {n} and what it returns to the caller in page {index}.</p>" for n in range(3)
        )
        page = (f"<html><head><title>{topic}</title></head><body>{SIDEBAR}{COOKIE}<div id='content'><h1>{topic}"
                f"<a class='headerlink' href='#t'>¶</a></h1>{body}</div>{FOOTER}</body></html>")
        path = tmp / f"{topic.lower()}.html"
        path.write_text(page, encoding="utf-8")
        files.append(path)

    def count(parser: object) -> tuple[int, int]:
        docs, _ = parse_all(parser, files)
        blocks = [b for d in docs if d for b in d.text.split("\n\n")]
        glyphs = sum(1 for d in docs if d for s in d.sections if any("¶" in h for h in s.headings))
        return sum(1 for b in blocks if any(m in b for m in BOILERPLATE_MARKERS)), glyphs

    old_blocks, old_glyphs = count(old_parser("html", "HtmlParser")())
    new_blocks, new_glyphs = count(HtmlParser())
    return {"pages": len(files), "old_boilerplate_blocks": old_blocks, "new_boilerplate_blocks": new_blocks,
            "old_sections_with_glyph_heading": old_glyphs, "new_sections_with_glyph_heading": new_glyphs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html-pages", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    import tempfile

    results: dict[str, Callable[[], object] | object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["markdown"] = bench_markdown()
        results["rst"] = bench_rst()
        results["html_real"] = bench_html_real(args.html_pages)
        results["html_boilerplate"] = bench_boilerplate(Path(tmp) / "pages")
    for name, row in results.items():
        sys.stdout.write(f"{name:18} " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                   for k, v in row.items()) + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
