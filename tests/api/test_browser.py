"""The chat page at ``/`` in a real browser, against a real ``python -m rag.api`` process and the embedded LLM.

Chromium (Debian's ``/usr/bin/chromium``, or ``RAG_TEST_CHROMIUM``) is driven by Playwright: pick the
collection, upload a file, ask, watch sources and the streamed answer arrive, open a cited chunk, and ask
again with a filter. The page must load nothing from outside the server, log no console errors, and show
document text as text (the uploaded file carries markup that would run if it were inserted as HTML).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

STATIC = Path(__file__).resolve().parents[2] / "api" / "static"
CHROMIUM = os.environ.get("RAG_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
# One llama.cpp thread and short answers: on a busy 2-core machine that is seconds per answer, not minutes.
ENV = {
    **os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    "RAG_LLM__THREADS": "1", "RAG_LLM__MAX_TOKENS": "160",
}
ANSWER_TIMEOUT_MS = 240_000  # the first question starts llama.cpp (~10 s); two slow cores can take much longer

# Markup an unescaped page would execute or render: the test checks it shows up as literal text.
UPLOAD_NAME = "refunds.txt"
UPLOAD_TEXT = (
    "Refund requests\n\n"
    "Refund requests for the widget are answered within five working days. "
    "Write [bold] or <b>urgent</b> in the form if it is urgent. "
    "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">\n"
)

# Records which of the sources list and the answer text appeared first.
ORDER_OBSERVER = """() => {
  const order = window.__order = [];
  new MutationObserver(() => {
    if (!order.includes("sources") && document.querySelector("#sources li")) order.push("sources");
    if (!order.includes("answer") && document.getElementById("answer").textContent) order.push("answer");
  }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""



def test_page_is_self_contained_and_inserts_text_only() -> None:
    """No CDN, font or remote URL in the static files, and no HTML sink in the script."""
    files = {path.name: path.read_text() for path in STATIC.iterdir() if path.is_file()}
    assert {"index.html", "app.js", "style.css"} <= set(files)
    for name, text in files.items():
        assert not re.search(r"https?://|url\(\s*['\"]?//|@import", text), name
    for attribute in re.findall(r"""(?:src|href)=["']([^"']*)["']""", files["index.html"]):
        assert attribute.startswith(("/static/", "data:")), attribute
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function", files["app.js"])


@pytest.fixture(scope="module")
def sync_api():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium (or set RAG_TEST_CHROMIUM) to run the "
                    "browser test")
    return pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package "
                               "(pip install 'rag-platform[dev]')")


@pytest.fixture(scope="module")
def server(sync_api, tmp_path_factory: pytest.TempPathFactory, corpus_writer: Callable[[Path], Path]) -> Iterator[str]:
    """A real API process over a data directory with the sample corpus ingested; yields its URL."""
    root = tmp_path_factory.mktemp("browser")
    docs = corpus_writer(root)
    data = root / "data"
    ingest = subprocess.run([sys.executable, "-m", "rag.cli", "--data-dir", str(data), "ingest", str(docs)],
                            cwd=root, env=ENV, capture_output=True, text=True, timeout=300)
    assert ingest.returncode == 0, ingest.stderr
    log_path = root / "server.log"
    with log_path.open("w") as log:
        # Every upload runs as a background job (202, then GET /v1/jobs/{id}): the page's longer path.
        process = subprocess.Popen([sys.executable, "-m", "rag.api", "--data-dir", str(data), "--port", "0"],
                                   cwd=root, env={**ENV, "RAG_API__JOB_THRESHOLD_KB": "0"}, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (match := re.search(r"serving at (http://\S+)", log_path.read_text())):
            assert process.poll() is None, f"the server exited with {process.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"the server did not start in 120 s:\n{log_path.read_text()}"
            time.sleep(0.1)
        yield match.group(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in ("127.0.0.1", "localhost", "::1")


def _wait_for_answer(page) -> None:
    """Until the stream has ended: ``done`` filled the meta line, or an ``error`` event was shown."""
    page.wait_for_function(
        "() => document.getElementById('answer').getAttribute('aria-busy') === 'false'"
        " && (document.getElementById('answer-meta').textContent !== ''"
        "     || !document.getElementById('error').hidden)",
        timeout=ANSWER_TIMEOUT_MS,
    )
    error = page.locator("#error")
    assert error.is_hidden(), error.text_content()


@pytest.mark.slow
def test_chat_page_uploads_asks_streams_and_shows_cited_chunks(sync_api, server: str, tmp_path: Path) -> None:
    console_errors: list[str] = []
    requests: list[str] = []
    asks: list = []  # the /ask requests
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: msg.type == "error" and console_errors.append(msg.text))
            page.on("pageerror", lambda exc: console_errors.append(f"uncaught: {exc}"))
            page.on("request", lambda request: requests.append(request.url))
            page.on("request", lambda request: request.url.endswith("/ask") and asks.append(request))

            page.goto(server + "/")
            assert page.title() == "rag-platform"
            page.wait_for_selector("#collection option[value=default]", state="attached")
            page.select_option("#collection", "default")
            assert "4 documents" in page.locator("#collection option[value=default]").text_content()

            # Upload through the file input: the report lists the new document and the refused file with its
            # reason, and the picker shows the new document count.
            page.set_input_files("#files", files=[
                {"name": UPLOAD_NAME, "mimeType": "text/plain", "buffer": UPLOAD_TEXT.encode()},
                {"name": "tool.exe", "mimeType": "application/octet-stream", "buffer": b"MZ"},
            ])
            page.click("#upload")
            report = page.locator("#upload-report .summary")
            report.wait_for(timeout=120_000)
            assert report.text_content().startswith("1 added, 0 updated, 0 unchanged, 0 removed, 1 failed")
            assert "Added: " + UPLOAD_NAME in page.locator("#upload-report").text_content()
            assert "tool.exe: unsupported file type .exe" in page.locator("#upload-report .failed").text_content()
            assert any("/v1/jobs/" in url for url in requests), "the 202 upload was not followed to its job"
            page.wait_for_function("() => document.querySelector('#collection option[value=default]')"
                                   ".textContent.includes('5 documents')")

            # Ask: sources, then the streamed answer with [n] markers as buttons.
            page.fill("#question", "How long does it take to answer refund requests?")
            page.evaluate(ORDER_OBSERVER)
            page.click("#ask")
            page.locator("#sources li").first.wait_for(timeout=ANSWER_TIMEOUT_MS)
            _wait_for_answer(page)
            assert page.evaluate("() => window.__order") == ["sources", "answer"]
            assert json.loads(asks[-1].post_data) == {
                "question": "How long does it take to answer refund requests?", "filters": None, "stream": True}
            assert "authorization" not in asks[-1].headers
            answer = page.locator("#answer").text_content()
            assert answer.strip(), "the streamed answer is empty"
            sources = page.locator("#sources li")
            assert sources.count() >= 1
            # The uploaded markup is shown as text: nothing ran, nothing was fetched, the literal text is there.
            assert page.evaluate("() => window.__pwned") is None
            assert not page.locator("#sources img, #sources script, #sources b, #answer b").count()
            assert "<script>" in page.locator("#sources").text_content()

            markers = page.locator("#answer button.cite")
            target = markers.first if markers.count() else page.locator("#sources button.source").first
            n = int(target.get_attribute("data-n"))
            target.click()
            label = page.locator("#chunk-label").text_content()
            ids = page.locator("#chunk-ids").text_content()
            doc_id, chunk_id = re.match(r"document (.+) · chunk (\S+) · score", ids).groups()
            document = httpx.get(f"{server}/v1/collections/default/documents/{doc_id}").json()
            chunk_text = next(c["text"] for c in document["chunk_list"] if c["chunk_id"] == chunk_id)
            assert page.locator("#chunk-text").text_content() == chunk_text
            assert label.startswith(f"[{n}] {document['source']}"), label
            page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

            # A filter travels with the request, and every source respects it; so does the API key, which
            # the page keeps in localStorage (this server has no keys, so any key is accepted).
            page.fill("#api-key", "rag_test_key")
            page.dispatch_event("#api-key", "change")
            page.fill("#filters", "source~*/guide/*")
            page.fill("#question", "What does the widget need to install?")
            page.click("#ask")
            _wait_for_answer(page)
            assert json.loads(asks[-1].post_data)["filters"] == ["source~*/guide/*"]
            assert asks[-1].headers["authorization"] == "Bearer rag_test_key"
            assert page.evaluate("() => localStorage.getItem('rag.apiKey')") == "rag_test_key"
            labels = page.locator("#sources .source-label").all_text_contents()
            assert labels and all("/guide/" in text for text in labels), labels

            # A bad filter is the server's error, shown from its {"error": {...}} body.
            page.fill("#filters", '{"page": {"between": [1, 3]}}')
            page.click("#ask")
            page.locator("#error").wait_for(timeout=30_000)
            assert "invalid_filter" in page.locator("#error").text_content()
        finally:
            browser.close()

    # The 422 of the bad filter is the one error the browser may log (as a failed resource load).
    unexpected = [text for text in console_errors if "422" not in text]
    assert not unexpected, unexpected
    assert requests and all(_is_local(url) for url in requests), [url for url in requests if not _is_local(url)]
    assert not any(urlsplit(url).path == "/x" for url in requests), "the uploaded <img> was rendered"
