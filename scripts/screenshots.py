"""Screenshots of the web app for the docs: ingest ``docs/`` into a temporary data directory, start
``rag serve`` on it, drive Chromium through a conversation, and save PNGs to ``docs/.images/``
(a hidden folder, which ``rag ingest docs`` skips: the PNGs would otherwise be read by OCR into the demo
corpus).

    python scripts/screenshots.py [--out docs/.images] [--chromium /usr/bin/chromium]

Needs the dev extras (playwright) and a Chromium (Debian's ``/usr/bin/chromium``). The shipped defaults:
no LLM is configured, so answers are extractive, nothing starts an LLM, and a follow-up is searched with
the question before it: the pictures come out the same on any machine. Each PNG is reduced to a
256-colour palette to keep it small (well under 200 KB).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("RAG_")},
    "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
}
QUESTION = "How do I create an API key for one collection?"
FOLLOW_UP = "Which roles can it have?"
DONE = """(count) => {
  const turns = document.querySelectorAll("#transcript li.turn");
  return turns.length === count && turns[count - 1].querySelector(".answer").getAttribute("aria-busy") === "false";
}"""


def serve(data: Path, cwd: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m rag.api`` on ``data``; the process and its URL."""
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "rag.api", "--data-dir", str(data), "--port", "0"],
                                   cwd=cwd, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (match := re.search(r"serving at (http://\S+)", log_path.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            sys.exit(f"the server did not start:\n{log_path.read_text()}")
        time.sleep(0.2)
    return process, match.group(1)


def save(page: Any, path: Path, **options: Any) -> None:
    """A screenshot, reduced to a palette PNG."""
    from PIL import Image

    page.screenshot(path=str(path), **options)
    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=256).save(path, optimize=True)
    sys.stdout.write(f"{path} ({path.stat().st_size // 1024} KB)\n")


def ask(page: Any, question: str) -> None:
    count = page.locator("#transcript li.turn").count() + 1
    page.fill("#question", question)
    page.press("#question", "Enter")
    page.wait_for_function(DONE, arg=count, timeout=120_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / ".images")
    parser.add_argument("--chromium", default=os.environ.get("RAG_TEST_CHROMIUM") or shutil.which("chromium")
                        or "/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rag-screenshots-") as tmp:
        # A copy of the pages (not the images) in a project of its own: sources read docs/api.md and so on.
        project = Path(tmp)
        shutil.copytree(ROOT / "docs", project / "docs", ignore=shutil.ignore_patterns(".images"))
        data = project / ".rag"
        subprocess.run([sys.executable, "-m", "rag.cli", "--data-dir", str(data), "ingest", "docs"],
                       cwd=project, env=ENV, check=True, capture_output=True)
        process, url = serve(data, project, project / "server.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1360, "height": 1000})
                page.goto(url + "/")
                page.wait_for_selector("#document-rows tr")
                ask(page, QUESTION)
                ask(page, FOLLOW_UP)
                page.evaluate("() => window.scrollTo(0, 0)")
                save(page, args.out / "web-app-chat.png")

                page.locator("#transcript li.turn").last.locator("button.cite").first.click()
                page.locator("#viewer mark").wait_for()
                save(page, args.out / "web-app-citation.png")
                page.keyboard.press("Escape")

                save(page, args.out / "web-app-documents.png", full_page=True,
                     clip=page.locator("aside.side").bounding_box())
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
