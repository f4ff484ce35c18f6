"""The web app at ``/`` in a real browser, against one real ``python -m rag.api`` process.

Chromium (Debian's ``/usr/bin/chromium``, or ``RAG_TEST_CHROMIUM``) is driven by Playwright through what a
user does: enter an API key (a wrong one first), pick one of two collections, upload files with progress
from the job endpoint, ask, ask a follow-up that only the first turn makes answerable, open a citation in
its document, delete a document and see it leave later answers, keep conversations across a reload, and
read the errors the page shows (401, 403, 413, the LLM down, a bad filter). The page must load nothing
from outside the server, log no script error, and show document text as text (an uploaded file carries
markup that would run if it were inserted as HTML). axe-core (npm, ``.cache/node``) checks accessibility.

The server answers extractively (no LLM is started); its LLM endpoint is unreachable, so a follow-up is
made standalone by the heuristic (the previous question, then the follow-up) and the collection set to
``generation.mode = llm`` fails its answers the way a server whose LLM is down does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from api_server import UNREACHABLE_LLM, ApiServer, upload_corpus, upload_files

from rag.api.keys import KeyStore

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "api" / "static"
CHROMIUM = os.environ.get("RAG_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
# axe-core from npm: .ci/run installs it into .cache/node when npm is there.
AXE = Path(os.environ.get("RAG_TEST_AXE") or ROOT / ".cache" / "node" / "node_modules" / "axe-core" / "axe.min.js")
TIMEOUT_MS = 60_000
MAX_UPLOAD_MB = 0.25

# Markup an unescaped page would execute or render: the test checks it shows up as literal text.
UPLOAD_NAME = "refunds.txt"
UPLOAD_TEXT = (
    "Refund requests\n\n"
    "Refund requests for the widget are answered within five working days. "
    "Write [bold] or <b>urgent</b> in the form if it is urgent. "
    "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">\n"
)
REFUND_QUESTION = "How long does it take to answer refund requests for the widget?"

HANDBOOK = {"onboarding.md": "# Onboarding\n\nNew staff get a laptop and a badge on their first day at the office.\n"}

# Records which of a turn's sources and its answer text appeared first.
ORDER_OBSERVER = """() => {
  const order = window.__order = [];
  const turns = document.getElementById("transcript");
  new MutationObserver(() => {
    const last = turns.lastElementChild;
    if (!last) return;
    if (!order.includes("sources") && last.querySelector(".sources li")) order.push("sources");
    if (!order.includes("answer") && last.querySelector(".answer").textContent) order.push("answer");
  }).observe(turns, {childList: true, subtree: true, characterData: true});
}"""

# Every text the upload's progress line showed.
PROGRESS_OBSERVER = """() => {
  const seen = window.__progress = [];
  const status = document.getElementById("upload-status");
  new MutationObserver(() => seen.push(status.textContent))
    .observe(status, {childList: true, subtree: true, characterData: true});
}"""

LAST_TURN_DONE = """(count) => {
  const turns = document.querySelectorAll("#transcript li.turn");
  return turns.length === count && turns[count - 1].querySelector(".answer").getAttribute("aria-busy") === "false";
}"""


def test_page_is_self_contained_and_inserts_text_only() -> None:
    """No CDN, font or remote URL in the static files, and no HTML sink in the scripts."""
    files = {path.name: path.read_text() for path in STATIC.iterdir() if path.is_file()}
    assert {"index.html", "app.js", "api.js", "dom.js", "viewer.js", "style.css"} <= set(files)
    for name, text in files.items():
        assert not re.search(r"https?://|url\(\s*['\"]?//|@import", text), name
    for attribute in re.findall(r"""(?:src|href)=["']([^"']*)["']""", files["index.html"]):
        assert attribute.startswith(("/static/", "data:", "#")), attribute
    for name in ("app.js", "api.js", "dom.js", "viewer.js"):
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function",
                             files[name]), name
        for module in re.findall(r"""from\s+["']([^"']+)["']""", files[name]):
            assert module.startswith("./") and (STATIC / module).is_file(), (name, module)


@pytest.fixture(scope="module")
def sync_api() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium (or set RAG_TEST_CHROMIUM) to run the "
                    "browser tests")
    return pytest.importorskip("playwright.sync_api", reason="the browser tests need the playwright package "
                               "(pip install 'rag-platform[dev]')")


class Site:
    """The server under test, its keys, and the corpus it was filled with."""

    def __init__(self, server: ApiServer, admin: str, reader: str) -> None:
        self.server = server
        self.url = server.url
        self.admin = admin  # '*' admin: both collections
        self.reader = reader  # read on default only


@pytest.fixture(scope="module")
def site(sync_api: Any, start_server: Callable[..., ApiServer], tmp_path_factory: pytest.TempPathFactory,
         corpus_writer: Callable[[Path], Path]) -> Site:
    """Collections ``default`` (the sample corpus) and ``handbook`` (whose answers need the LLM, which is
    down); every upload is a background job; bodies over 0.25 MB are refused. Keys exist: every request
    needs one."""
    root = tmp_path_factory.mktemp("browser")
    server = start_server(root / "data", **UNREACHABLE_LLM, RAG_GENERATION__MODE="extractive",
                          RAG_API__JOB_THRESHOLD_KB="0", RAG_API__MAX_UPLOAD_MB=str(MAX_UPLOAD_MB))
    with server.client() as client:
        upload_corpus(client, "default", corpus_writer(root))
        client.post("/v1/collections", json={"name": "handbook", "settings": {"generation": {"mode": "llm"}}}
                    ).raise_for_status()
        upload_files(client, "handbook", HANDBOOK)
    store = KeyStore(server.data_dir)
    return Site(server, store.create("*", "admin", "browser")[0], store.create("default", "read", "reader")[0])


@pytest.fixture(scope="module")
def browser(sync_api: Any) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Recorder:
    """What a page did: console errors, uncaught exceptions, requests (and the /ask ones)."""

    # Chromium logs every 4xx response as a failed resource load; these are the ones the test provokes
    # (the 404: a citation of a deleted document, which the viewer explains).
    EXPECTED = re.compile(r"Failed to load resource: the server responded with a status of (401|403|404|413|422)\b")

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.asks: list[Any] = []
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("request", lambda request: request.url.endswith("/ask") and self.asks.append(request))

    def check(self) -> None:
        unexpected = [text for text in self.errors if not self.EXPECTED.search(text)]
        assert not unexpected, unexpected
        outside = [url for url in self.requests if not _is_local(url)]
        assert self.requests and not outside, outside
        assert not any(urlsplit(url).path == "/x" for url in self.requests), "the uploaded <img> was rendered"


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in ("127.0.0.1", "localhost", "::1")


def _ask(page: Any, question: str) -> Any:
    """Type ``question``, press Enter, wait until its turn has finished; returns the turn's element."""
    count = page.locator("#transcript li.turn").count() + 1
    page.fill("#question", question)
    page.press("#question", "Enter")
    page.wait_for_function(LAST_TURN_DONE, arg=count, timeout=TIMEOUT_MS)
    return page.locator("#transcript li.turn").nth(count - 1)


def _sources(turn: Any) -> list[str]:
    return turn.locator(".source-label").all_text_contents()


def _use_key(page: Any, key: str) -> None:
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")


def _document_rows(page: Any) -> dict[str, str]:
    """Source -> chunk count, as the document manager lists them."""
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll("#document-rows tr:not(.pending)")]
      .map((row) => [row.querySelector(".doc-source").textContent, row.querySelector("td.num").textContent]))""")


@pytest.mark.slow
def test_web_app_flow(site: Site, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    seen = Recorder(page)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(site.url + "/")
    assert page.title() == "rag-platform"

    # No key: the page says so (401), and puts the cursor in the key field. A wrong key: the same.
    error = page.locator("#error")
    error.wait_for()
    assert "needs a valid API key" in error.text_content() and "unauthorized" in error.text_content()
    assert page.evaluate("() => document.activeElement.id") == "api-key"
    _use_key(page, "rag_wrong_key")
    page.wait_for_function("() => document.getElementById('error-text').textContent.includes('HTTP 401')")
    _use_key(page, site.admin)
    page.wait_for_selector("#collection option[value=handbook]", state="attached")
    assert error.is_hidden()
    assert page.evaluate("() => localStorage.getItem('rag.apiKey')") == site.admin
    assert page.locator("#collection option").all_text_contents() == ["default (4 documents)", "handbook (1 document)"]

    # The document manager: each document with its chunk count, as the API lists them.
    page.wait_for_selector("#document-rows tr")
    _check_keyboard(page)
    with site.server.client(site.admin) as client:
        listed = client.get("/v1/collections/default/documents").json()["documents"]
    assert _document_rows(page) == {d["source"]: str(d["chunks"]) for d in listed}

    # Upload: progress from the job, the report lists the new document and the refused file with its reason.
    page.evaluate(PROGRESS_OBSERVER)
    page.set_input_files("#files", files=[
        {"name": UPLOAD_NAME, "mimeType": "text/plain", "buffer": UPLOAD_TEXT.encode()},
        {"name": "tool.exe", "mimeType": "application/octet-stream", "buffer": b"MZ"},
    ])
    page.click("#upload")
    report = page.locator("#upload-report .summary")
    report.wait_for()
    assert report.text_content().startswith("1 added, 0 updated, 0 unchanged, 0 removed, 1 failed")
    assert "tool.exe: unsupported file type .exe" in page.locator("#upload-report .failed").text_content()
    assert any("/v1/jobs/" in url for url in seen.requests), "the 202 upload was not followed to its job"
    assert any(text.startswith("Indexing: ") for text in page.evaluate("() => window.__progress"))
    page.wait_for_function("() => document.querySelectorAll('#document-rows tr:not(.pending)').length === 5")
    assert _document_rows(page)[UPLOAD_NAME] == "1"
    assert "default (5 documents)" in page.locator("#collection option").all_text_contents()
    # A document's chunks, with their offsets.
    page.click(f"#document-rows button.doc-open[data-doc='{UPLOAD_NAME}']")
    page.locator("#viewer li.chunk").first.wait_for()
    assert page.locator("#viewer li.chunk").count() == 1
    assert re.search(r"chunk 1 of 1 · characters 0–\d+", page.locator("#viewer li.chunk .meta").text_content())
    assert "<script>" in page.locator("#viewer li.chunk .chunk-text").text_content()
    page.keyboard.press("Escape")

    # Ask: the sources come first, then the streamed answer, with [n] markers as buttons.
    page.evaluate(ORDER_OBSERVER)
    first = _ask(page, REFUND_QUESTION)
    assert page.evaluate("() => window.__order") == ["sources", "answer"]
    assert json.loads(seen.asks[-1].post_data) == {"question": REFUND_QUESTION, "filters": None, "stream": True}
    assert seen.asks[-1].headers["authorization"] == f"Bearer {site.admin}"
    assert UPLOAD_NAME in _sources(first)
    assert "five working days" in first.locator(".answer").text_content()
    # The uploaded markup is shown as text: nothing ran, nothing was fetched, the literal text is there.
    assert page.evaluate("() => window.__pwned") is None
    assert not page.locator("#transcript img, #transcript script, #transcript b").count()
    assert "<script>" in first.locator(".sources").text_content()

    # A citation opens its chunk inside its document: the cited span marked (from the stored offsets),
    # scrolled into view, with its character span; Escape closes it and gives the focus back.
    marker = first.locator("button.cite").first
    n = int(marker.get_attribute("data-n"))
    hit_source = first.locator(f".sources button.source[data-n='{n}'] .source-label").text_content()
    assert hit_source.startswith(UPLOAD_NAME)
    marker.click()
    viewer = page.locator("#viewer")
    mark = viewer.locator("mark#cited-span")
    mark.wait_for()
    with site.server.client(site.admin) as client:
        document = client.get(f"/v1/collections/default/documents/{UPLOAD_NAME}").json()
    chunk = document["chunk_list"][0]
    assert mark.text_content() == chunk["text"]
    span = page.locator("#viewer-span").text_content()
    assert f"characters {chunk['metadata']['start']}–{chunk['metadata']['end']}" in span, span
    assert page.locator("#viewer-title").text_content().startswith(f"[{n}] {UPLOAD_NAME}")
    assert _in_view(page, "#viewer-body", "#cited-span")
    page.click("#viewer-mode")  # the same document as its chunks, the cited one marked
    assert viewer.locator("li.chunk.cited mark").text_content() == chunk["text"]
    page.keyboard.press("Escape")
    assert viewer.is_hidden()
    assert page.evaluate("() => document.activeElement.classList.contains('cite')")

    # A follow-up that only the first turn makes answerable: it carries the turn as history. The same
    # question in a new chat has nothing to go on.
    page.click("#new-chat")
    founded = _ask(page, "Who founded the company?")
    assert "1987" in founded.locator(".answer").text_content()
    follow_up = _ask(page, "In which city?")
    assert json.loads(seen.asks[-1].post_data)["history"] == [
        {"role": "user", "content": "Who founded the company?"},
        {"role": "assistant", "content": founded.locator(".answer").text_content()},
    ]
    assert "Helsinki" in follow_up.locator(".answer").text_content()
    page.click("#new-chat")
    alone = _ask(page, "In which city?")
    assert "history" not in json.loads(seen.asks[-1].post_data)
    assert "Helsinki" not in alone.locator(".answer").text_content()
    assert page.locator("#conversation-list li").count() == 3

    # Delete the uploaded document: it leaves the list, the counts and later answers.
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"#document-rows button.doc-delete[aria-label='Delete {UPLOAD_NAME}']")
    page.wait_for_function("() => document.querySelector('#collection option[value=default]')"
                           ".textContent.includes('4 documents')")
    page.wait_for_function("() => document.querySelectorAll('#document-rows tr').length === 4")
    assert UPLOAD_NAME not in _document_rows(page)
    page.click("#new-chat")
    after = _ask(page, REFUND_QUESTION)
    assert after.locator(".source-label").count() and UPLOAD_NAME not in " ".join(_sources(after))

    # Conversations survive a reload; an old citation of the deleted document still shows what it cited.
    page.reload()
    page.wait_for_selector("#collection option[value=default]", state="attached")
    assert page.locator("#conversation-list li").count() == 4
    page.locator("#conversation-list button.conversation", has_text="How long does it take").last.click()
    page.locator("#transcript li.turn").first.locator("button.cite").first.click()
    page.wait_for_function("() => document.getElementById('viewer-source').textContent.includes('no longer')")
    assert "five working days" in page.locator("#viewer-body mark").text_content()
    page.click("#viewer-close")

    # A filter travels with the question, and every source respects it; a bad one is the server's 422.
    page.click("#new-chat")
    page.fill("#filters", "format=markdown")
    filtered = _ask(page, "What does the widget need to install?")
    assert json.loads(seen.asks[-1].post_data)["filters"] == ["format=markdown"]
    labels = _sources(filtered)
    assert labels and all(label.split(" § ")[0].endswith(".md") for label in labels), labels
    page.fill("#filters", '{"page": {"between": [1, 3]}}')
    bad = _ask(page, "What does the widget need to install?")
    assert "invalid_filter" in bad.locator(".turn-error").text_content()
    page.fill("#filters", "")

    # The other collection: a new chat; its LLM is down, which the turn says, under the sources it found.
    page.select_option("#collection", "handbook")
    page.wait_for_function("() => document.getElementById('documents-summary').textContent.startsWith('handbook')")
    assert page.locator("#transcript li").count() == 0
    assert list(_document_rows(page)) == ["onboarding.md"]
    down = _ask(page, "What do new staff get on their first day?")
    assert "/collections/handbook/ask" in seen.asks[-1].url
    assert _sources(down) == ["onboarding.md § Onboarding"]
    problem = down.locator(".turn-error").text_content()
    assert "language model did not answer" in problem and "llm_error" in problem, problem

    # 413: an upload over api.max_upload_mb.
    page.set_input_files("#files", files=[{"name": "big.txt", "mimeType": "text/plain",
                                           "buffer": b"word " * int(MAX_UPLOAD_MB * 1024 * 1024 / 2)}])
    page.click("#upload")
    too_big = page.locator("#upload-report [role=alert]")
    too_big.wait_for()
    assert "larger than the server accepts" in too_big.text_content(), too_big.text_content()

    # A read key for one collection: only that one is listed, and an upload is refused (403).
    _use_key(page, site.reader)
    page.wait_for_function("() => document.querySelectorAll('#collection option').length === 1")
    assert page.locator("#collection").input_value() == "default"
    page.set_input_files("#files", files=[{"name": "note.txt", "mimeType": "text/plain", "buffer": b"A note."}])
    page.click("#upload")
    page.wait_for_function("() => (document.querySelector('#upload-report [role=alert]') || {}).textContent"
                           "?.includes('forbidden')")
    assert "not allowed with this API key" in page.locator("#upload-report [role=alert]").text_content()

    context.close()
    seen.check()


def _in_view(page: Any, container: str, target: str) -> bool:
    """Whether ``target`` is scrolled into the visible part of ``container``."""
    return page.evaluate("""([container, target]) => {
      const box = document.querySelector(container).getBoundingClientRect();
      const mark = document.querySelector(target).getBoundingClientRect();
      return mark.top >= box.top - 1 && mark.top < box.bottom;
    }""", [container, target])


# Where Tab goes, in this order (other stops, such as the document rows' buttons, lie between).
TAB_ORDER = ["collection", "refresh", "api-key", "new-chat", "question", "filters", "ask", "files", "upload"]
FOCUSED = """() => {
  const node = document.activeElement;
  const style = getComputedStyle(node);
  return {id: node.id, visible: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2};
}"""


def _check_keyboard(page: Any) -> None:
    """Tab reaches every control in reading order, each with a visible focus outline."""
    page.click("h1")  # Tab goes on from here: the top of the page
    stops = []
    for _ in range(60):
        page.keyboard.press("Tab")
        stops.append(page.evaluate(FOCUSED))
        if stops[-1]["id"] == "upload":
            break
    ids = [stop["id"] for stop in stops]
    assert [i for i in ids if i in TAB_ORDER] == TAB_ORDER, ids
    assert all(stop["visible"] for stop in stops), [stop for stop in stops if not stop["visible"]]


@pytest.mark.slow
def test_accessibility(site: Site, browser: Any) -> None:
    """axe-core finds no serious or critical violation: the chat with an answer, and the citation viewer."""
    if not AXE.is_file():
        pytest.skip(f"axe-core is not installed at {AXE}: npm install --prefix .cache/node axe-core@4 (.ci/run "
                    "does it when npm is there), or set RAG_TEST_AXE to axe.min.js")
    # The page's CSP allows no inline script, which is how Playwright injects axe: bypassed here only.
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    context.add_init_script(f"localStorage.setItem('rag.apiKey', {json.dumps(site.admin)})")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(site.url + "/")
    page.wait_for_selector("#document-rows tr")
    turn = _ask(page, "Who founded the company?")
    page.add_script_tag(path=str(AXE))
    problems = {"chat": _axe(page)}
    turn.locator("button.cite").first.click()
    page.locator("#viewer mark").wait_for()
    problems["viewer"] = _axe(page)
    context.close()
    assert problems == {"chat": [], "viewer": []}


def _axe(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is."""
    return page.evaluate("""async () => {
      const result = await axe.run(document, {resultTypes: ["violations"]});
      return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
        .map((v) => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" "))}));
    }""")
