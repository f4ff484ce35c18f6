"""``rag eval run|compare|sweep`` as a user runs them: real ``rag`` processes over an index of docs/, the real
embedded LLM answering, and the scripted judge (known verdicts) or the real embedded judge scoring."""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from eval_helpers import QA, rag, rag_env, run_concurrently, start_rag
from scripted_judge import ScriptedJudge

from rag.engine.answerability import NOT_COVERED_MODEL
from rag.evaluate.retrieval_metrics import mrr_at, ndcg_at, recall_at

ALL_METRICS = "faithfulness,context_recall,answer_relevancy,context_precision,ndcg@10,recall@10,mrr"
HOSTILE = "What does <b>--max-per-doc</b> do? <script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned=2\">"


def qa_rows(n: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in QA.read_text(encoding="utf-8").splitlines()[:n]]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_run(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    return results, samples


@pytest.fixture(scope="module")
def module_judge() -> Iterator[ScriptedJudge]:
    with ScriptedJudge() as server:
        yield server


@pytest.fixture(scope="module")
def scored_run(docs_project: Path, module_judge: ScriptedJudge, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three docs questions plus one whose text is hostile HTML, answered by the embedded LLM, judged by the
    scripted judge on every metric."""
    folder = tmp_path_factory.mktemp("scored")
    rows = [*qa_rows(3), {"id": "hostile", "question": HOSTILE, "reference": "At most N chunks per document.",
                          "reference_doc_ids": ["docs/filters.md"]}]
    testset = write_jsonl(folder / "qa.jsonl", rows)
    result = rag(docs_project, "eval", "run", str(testset), "--out", str(folder / "run"), "--metrics", ALL_METRICS,
                 "--judge-base-url", module_judge.base_url, "--judge-model", module_judge.model,
                 env=rag_env(folder / "cache", RAG_GENERATION__MODE="llm"))
    assert result.returncode == 0, result.stderr
    assert "report: " in result.stdout and "faithfulness" in result.stdout
    return folder / "run"


@pytest.mark.slow
def test_run_writes_every_report_with_consistent_scores(scored_run: Path, module_judge: ScriptedJudge) -> None:
    results, samples = read_run(scored_run)
    assert results["schema_version"] == 1 and results["kind"] == "rag-eval-run"
    assert results["judge"]["model"] == "scripted-judge" and results["judge"]["base_url"] == module_judge.base_url
    assert results["judge"]["caveat"] is None
    assert results["testset"]["questions"] == 4 and len(results["testset"]["sha256"]) == 64
    assert results["metrics"] == ["faithfulness", "context_recall", "answer_relevancy", "context_precision",
                                  "ndcg@10", "recall@10", "mrr@10"]
    assert [s["id"] for s in samples] == ["q01", "q02", "q03", "hostile"]
    for sample in samples:
        assert sample["answer"] and sample["model"] == "SmolLM2-135M-Instruct" and sample["contexts"]
        assert sample["timings"]["retrieval_ms"] > 0 and sample["timings"]["generation_ms"] > 0
        for name, score in sample["scores"].items():
            assert (score["value"] is None) != (score["missing"] is None), (sample["id"], name)
        # Faithfulness is exactly the share of supported claims among the verdicts the judge gave.
        faith = sample["scores"]["faithfulness"]
        verdicts = [d["verdict"] for d in faith["details"]]
        assert faith["value"] == sum(verdicts) / len(verdicts)
        relevant = dict(sample["reference_doc_ids"])
        ranked = sample["ranked_doc_ids"]
        assert len(ranked) == len(set(ranked)) <= 10
        assert sample["scores"]["ndcg@10"]["value"] == ndcg_at(ranked, relevant, 10)
        assert sample["scores"]["recall@10"]["value"] == recall_at(ranked, relevant, 10)
        assert sample["scores"]["mrr@10"]["value"] == mrr_at(ranked, relevant, 10)
    for name, summary in results["summary"].items():
        values = [s["scores"][name]["value"] for s in samples if s["scores"][name]["value"] is not None]
        assert summary["n"] == len(values) and summary["missing"] == 4 - len(values)
        assert math.isclose(summary["mean"], sum(values) / len(values))
        assert summary["ci_low"] <= summary["mean"] <= summary["ci_high"]
    assert set(results["latency"]) >= {"retrieval", "generation", "total"}
    assert results["judge"]["calls"]["sent"] == len(module_judge.requests)
    markdown = (scored_run / "report.md").read_text(encoding="utf-8")
    assert all(f"| {qid} |" in markdown for qid in ("q01", "q02", "q03", "hostile"))
    # Answerability: each question's probability is the one its answer's retrieval gave (the gate declined
    # exactly those below the threshold), and the calibration section labels by context recall >= 0.5.
    threshold = results["config"]["retrieval"]["answerable_threshold"]
    for sample in samples:
        assert 0.0 <= sample["answerable"] <= 1.0
        assert (sample["model"] == NOT_COVERED_MODEL) == (sample["answerable"] < threshold)
    calibration = results["calibration"]
    recalls = {s["id"]: s["scores"]["context_recall"]["value"] for s in samples}
    labelled = [qid for qid, value in recalls.items() if value is not None]
    assert calibration["label"]["source"] == "context_recall" and calibration["probabilities"] == 4
    assert calibration["n"] == len(labelled) and calibration["small_n"]
    assert calibration["answerable"] == sum(recalls[qid] >= 0.5 for qid in labelled)
    assert sum(b["count"] for b in calibration["bins"]) == calibration["n"]
    assert calibration["declined"]["count"] == sum(s["answerable"] < threshold for s in samples)
    assert "## Answerability calibration" in markdown and f"only {calibration['n']} labelled questions" in markdown


class _Report(HTMLParser):
    """Collects the question rows, resources the page would load, and the tags it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.row_ids: list[str] = []
        self.external: list[str] = []
        self.tags: set[str] = set()
        self.script_bodies = 0
        self.caveat = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.add(tag)
        if tag == "tr" and values.get("data-id"):
            self.row_ids.append(values["data-id"])
        for attr in ("src", "href"):
            if values.get(attr) and not values[attr].startswith("#"):
                self.external.append(f"{tag} {attr}={values[attr]}")
        if tag == "link":
            self.external.append(str(values))
        if tag == "script":
            self.script_bodies += 1
        if values.get("id") == "judge-caveat":
            self.caveat = True


@pytest.mark.slow
def test_html_report_is_self_contained_and_lists_every_question(scored_run: Path) -> None:
    text = (scored_run / "report.html").read_text(encoding="utf-8")
    parser = _Report()
    parser.feed(text)
    assert parser.row_ids == ["q01", "q02", "q03", "hostile"]
    assert parser.external == [] and "@import" not in text
    assert parser.script_bodies == 1  # the sorting script, nothing injected by the hostile question
    assert "svg" in parser.tags and not parser.caveat
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text
    for qa in qa_rows(3):
        assert qa["question"].replace("'", "&#x27;") in text


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Chromium (/usr/bin/chromium)")
def test_html_report_opens_offline_in_chromium_and_sorts(scored_run: Path) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    requests: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
            page.on("request", lambda req: requests.append(req.url))
            page.goto((scored_run / "report.html").as_uri())
            assert page.locator("#questions > tbody > tr[data-id]").count() == 4
            assert page.locator("#plot-metrics svg").count() == 1 and page.locator("#plot-latency svg").count() == 1
            assert page.evaluate("window.__pwned") is None
            column = page.locator("#questions th", has_text="mrr@10")
            index = int(column.get_attribute("data-col"))

            def values() -> list[float]:
                cells = page.locator(f"#questions > tbody > tr[data-id] > td:nth-child({index + 1})")
                return [float(v) for v in cells.evaluate_all("cs => cs.map(c => c.getAttribute('data-sort'))") if v]

            column.click()
            assert values() == sorted(values(), reverse=True)
            column.click()
            assert values() == sorted(values())
            # The first question's reasons and contexts are in the full-width row under it.
            first = page.locator("#questions > tbody > tr").first.get_attribute("data-id")
            detail = page.locator(f"#questions > tbody > tr.detail[data-for='{first}']")
            detail.locator("summary").click()
            assert detail.locator("pre").first.is_visible()
        finally:
            browser.close()
    assert errors == []
    assert [url for url in requests if not url.startswith("file://")] == []


@pytest.mark.slow
def test_cli_errors_are_one_line_with_exit_codes(docs_project: Path, scored_run: Path, tmp_path: Path) -> None:
    env = rag_env(tmp_path / "cache")
    # Each case has its own --out folder: the cases are independent processes, run two at a time below.
    out = [tmp_path / f"o{i}" for i in range(6)]
    cases = [
        (("eval", "run", str(tmp_path / "missing.jsonl"), "--out", str(out[0])), 2, "does not exist"),
        (("eval", "run", "docs_qa", "--out", str(out[1]), "--metrics", "bleu"), 2, "unknown metric 'bleu'"),
        (("eval", "run", "docs_qa", "--out", str(out[2]), "--judge-model", "x"), 2, "needs --judge-base-url"),
        (("eval", "run", "docs_qa", "--out", str(out[3]), "--set", "retrieval.alpha=7"), 2, "retrieval.alpha"),
        (("eval", "run", "docs_qa", "--out", str(out[4]), "-c", "nope"), 2, "no collection named 'nope'"),
        (("eval", "run", "docs_qa", "--out", str(out[5]), "--judge-base-url", "http://127.0.0.1:9/v1",
          "--judge-model", "m"), 3, "cannot reach the judge endpoint"),
        (("eval", "run", str(QA), "--out", str(scored_run), "--limit", "1"), 2, "holds a run with other settings"),
        (("eval", "compare", str(scored_run), "--out", str(tmp_path / "c")), 2, "at least two run folders"),
        (("eval", "compare", str(scored_run), str(tmp_path), "--out", str(tmp_path / "c")), 2, "no finished rag eval run"),
        (("eval", "sweep", "docs_qa", "--grid", "alpha", "--out", str(tmp_path / "s")), 2, "--grid expects"),
    ]
    results = run_concurrently(docs_project, [args for args, _, _ in cases], env=env)
    for (args, code, message), result in zip(cases, results):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == code, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, result.stderr)
        assert "Traceback" not in result.stderr


def beir_folder(root: Path, n: int = 12) -> Path:
    folder = root / "beir"
    (folder / "qrels").mkdir(parents=True)
    rows = qa_rows(n)
    write_jsonl(folder / "queries.jsonl", [{"_id": r["id"], "text": r["question"]} for r in rows])
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{r['id']}\t{d}\t1\n" for r in rows for d in r["reference_doc_ids"]))
    return folder


@pytest.mark.slow
def test_beir_folder_runs_retrieval_only(docs_project: Path, tmp_path: Path) -> None:
    result = rag(docs_project, "eval", "run", str(beir_folder(tmp_path)), "--out", str(tmp_path / "run"), "--json",
                 env=rag_env(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert results == json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["judge"] is None and results["metrics"] == ["ndcg@10", "recall@10", "mrr@10"]
    assert results["summary"]["recall@10"]["mean"] > 0.5 and results["summary"]["ndcg@10"]["missing"] == 0
    _, samples = read_run(tmp_path / "run")
    assert all(s["answer"] is None and s["contexts"] for s in samples)  # retrieved, not answered
    # No judge: calibration labels a question answerable when a qrels document is among its k hits.
    calibration = results["calibration"]
    assert calibration["label"]["source"] == "qrels" and calibration["label"]["k"] == 5
    assert calibration["n"] == 12 and calibration["small_n"] and all(0 <= s["answerable"] <= 1 for s in samples)
    found = [bool({c["doc_id"] for c in s["contexts"]} & set(s["reference_doc_ids"])) for s in samples]
    assert calibration["answerable"] == sum(found)
    assert 'id="calibration"' in (tmp_path / "run" / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_sweep_then_compare(docs_project: Path, tmp_path: Path) -> None:
    env = rag_env(tmp_path / "cache")
    beir = beir_folder(tmp_path, 12)
    result = rag(docs_project, "eval", "sweep", str(beir), "--grid", "retrieval.alpha=0,1", "--out", str(tmp_path / "sw"),
                 "--metrics", "ndcg@10,mrr", "--json", env=env)
    assert result.returncode == 0, result.stderr
    comparison = json.loads(result.stdout)
    assert [r["label"] for r in comparison["runs"]] == ["retrieval.alpha=0", "retrieval.alpha=1"]
    assert [r["overrides"] for r in comparison["runs"]] == [{"retrieval": {"alpha": 0}}, {"retrieval": {"alpha": 1}}]
    runs = [read_run(tmp_path / "sw" / "runs" / f"run-0{i}") for i in (1, 2)]
    for metric in ("ndcg@10", "mrr@10"):
        m = comparison["comparisons"][0]["metrics"][metric]
        base = [s["scores"][metric]["value"] for s in runs[0][1]]
        other = [s["scores"][metric]["value"] for s in runs[1][1]]
        assert m["n"] == 12 and math.isclose(m["delta"], sum(other) / 12 - sum(base) / 12, abs_tol=1e-12)
        assert 0 < m["p_value"] <= 1 and m["ci_low"] <= m["delta"] <= m["ci_high"]
    assert (tmp_path / "sw" / "report.html").is_file() and (tmp_path / "sw" / "report.md").is_file()
    again = rag(docs_project, "eval", "compare", str(tmp_path / "sw" / "runs" / "run-01"),
                str(tmp_path / "sw" / "runs" / "run-02"), "--out", str(tmp_path / "cmp"), "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["comparisons"][0]["metrics"] == comparison["comparisons"][0]["metrics"]


@pytest.mark.slow
def test_query_options_reach_the_engine_from_set_and_grid(docs_project: Path, tmp_path: Path) -> None:
    """``--set query.k=8`` and ``--grid query.max_per_doc=1,3`` travel as each run's QueryOptions: k and the
    per-document cap shape every question's hits; a misspelt option is an error naming it."""
    env = rag_env(tmp_path / "cache")
    sweep = tmp_path / "sw"
    result = rag(docs_project, "eval", "sweep", str(beir_folder(tmp_path, 4)), "--grid", "query.max_per_doc=1,3",
                 "--set", "query.k=8", "--out", str(sweep), "--metrics", "mrr", "--json", env=env)
    assert result.returncode == 0, result.stderr
    comparison = json.loads(result.stdout)
    assert [r["overrides"] for r in comparison["runs"]] == [{"query": {"k": 8, "max_per_doc": 1}},
                                                           {"query": {"k": 8, "max_per_doc": 3}}]
    capped, wider = ([[c["doc_id"] for c in s["contexts"]] for s in read_run(sweep / "runs" / f"run-0{i}")[1]]
                     for i in (1, 2))
    assert all(len(docs) == len(set(docs)) == 8 for docs in capped)
    assert all(len(docs) == 8 for docs in wider) and any(len(set(docs)) < 8 for docs in wider)
    bad = rag(docs_project, "eval", "run", "docs_qa", "--out", str(tmp_path / "o"), "--set", "query.alhpa=0.3", env=env)
    assert bad.returncode == 2 and "unknown query option 'alhpa' in --set" in bad.stderr


@pytest.mark.slow
def test_embedded_judge_end_to_end(docs_project: Path, tmp_path: Path) -> None:
    """The default judge, the packaged SmolLM2 in llama.cpp, scores two questions; a re-run is all cache."""
    env = rag_env(tmp_path / "cache")
    testset = write_jsonl(tmp_path / "qa.jsonl", qa_rows(2))
    args = ("eval", "run", str(testset), "--out", str(tmp_path / "run"), "--judge-max-tokens", "384")
    result = rag(docs_project, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert "smoke-test scores only" in result.stderr
    results, samples = read_run(tmp_path / "run")
    assert {s["model"] for s in samples} == {"extractive"}  # the default answers; the judge is still the LLM
    judge = results["judge"]
    assert judge["embedded"] and judge["model"] == "SmolLM2-135M-Instruct" and judge["base_url"].startswith("http://127.0.0.1:")
    assert judge["json_schema"] and judge["max_tokens"] == 384 and judge["calls"]["sent"] >= 4
    assert results["metrics"][:2] == ["faithfulness", "context_recall"]
    for sample in samples:
        for name in ("faithfulness", "context_recall"):
            score = sample["scores"][name]
            assert (score["value"] is not None and 0 <= score["value"] <= 1) or score["missing"], (sample["id"], name)
    scored = [s["scores"][n]["value"] for s in samples for n in ("faithfulness", "context_recall")]
    assert any(v is not None for v in scored)  # the grammar-constrained 135M judge does return verdicts
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert html.index('id="judge-caveat"') < html.index("<h2>Summary</h2>")
    again = rag(docs_project, *args, env=env)
    assert again.returncode == 0, again.stderr
    rerun, rerun_samples = read_run(tmp_path / "run")
    assert rerun["judge"]["calls"]["sent"] == 0 and rerun["judge"]["calls"]["cached"] == judge["calls"]["sent"]
    assert rerun["timing"]["answer_seconds"] == 0  # answers came from the checkpoint
    assert rerun["timing"]["answers_reused"] == 2 and "answers reused from the earlier run" in \
        (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{name: (sc["value"], sc["missing"], sc["summary"]) for name, sc in row["scores"].items()} for row in rows]

    assert verdicts(rerun_samples) == verdicts(samples)


@pytest.mark.slow
def test_killed_run_resumes_without_repeating_judge_calls(docs_project: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    judge_log, port_file = tmp_path / "judge.log", tmp_path / "port"
    # The scripted judge as its own process, slow enough (0.4 s a call) that the run can be killed mid-judging.
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("scripted_judge.py")), str(port_file),
                               str(judge_log), "0.4"])
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert time.monotonic() < deadline, "scripted judge did not start"
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text()}/v1"
        env = rag_env(tmp_path / "cache")
        testset = write_jsonl(tmp_path / "qa.jsonl", qa_rows(4))
        args = ("eval", "run", str(testset), "--out", str(tmp_path / "run"), "--judge-base-url", url,
                "--judge-model", "scripted-judge", "--judge-concurrency", "1")

        def logged() -> list[dict[str, str]]:
            return [json.loads(line) for line in judge_log.read_text().splitlines()] if judge_log.exists() else []

        run = start_rag(docs_project, *args, env=env)
        deadline = time.monotonic() + 600
        while len(logged()) < 5:  # 4 answers made, then 3 calls per question: kill during the second question
            assert run.poll() is None, run.stderr.read() if run.stderr else ""
            assert time.monotonic() < deadline, "the run never reached the judge"
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        first = logged()
        assert not (tmp_path / "run" / "results.json").exists()
        answered = (tmp_path / "run" / "checkpoint" / "answers.jsonl").read_text().splitlines()
        assert len(answered) == 4

        result = rag(docs_project, *args, env=env)
        assert result.returncode == 0, result.stderr
        second = logged()[len(first):]
        results, samples = read_run(tmp_path / "run")
        # Every call answered before the kill came from the cache; only the one in flight may be asked again.
        repeated = {c["prompt"] for c in second} & {c["prompt"] for c in first}
        assert repeated <= {first[-1]["prompt"]}
        assert len(first) + len(second) - len(repeated) == 12  # 4 questions x (2 faithfulness + 1 recall)
        assert results["judge"]["calls"]["cached"] >= len(first) - 1
        assert results["judge"]["calls"]["sent"] == len(second)
        assert results["timing"]["answer_seconds"] == 0  # no question answered twice
        assert results["timing"]["answers_reused"] == 4 and results["timing"]["reused_answer_seconds"] > 0
        assert all(s["scores"]["faithfulness"]["value"] is not None for s in samples)
    finally:
        server.kill()
        server.wait(timeout=10)
