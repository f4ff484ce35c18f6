"""Comparisons of run folders with known per-question scores: deltas, pairing, tests, movers, warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.core.errors import ConfigError
from rag.evaluate.compare import compare_runs, write_comparison
from rag.evaluate.report import metric_summary
from rag.evaluate.significance import paired_bootstrap_ci, paired_randomization_test
from rag.evaluate.sweep import combinations, nested, parse_grid


def write_run(folder: Path, name: str, scores: dict[str, list[float | None]], *, judge: str = "judge-a",
              sha: str = "s" * 64, caveat: str | None = None, judge_info: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    ids = [f"q{i}" for i in range(len(next(iter(scores.values()))))]
    samples = [{"id": qid, "question": f"question <{qid}>",
                "scores": {m: {"value": v[i], "missing": None if v[i] is not None else "judge timed out"}
                           for m, v in scores.items()}} for i, qid in enumerate(ids)]
    results = {
        "schema_version": 1, "kind": "rag-eval-run", "name": name, "metrics": list(scores),
        "testset": {"sha256": sha, "source": "qa.jsonl", "questions": len(ids), "format": "jsonl"},
        "judge": judge_info or {"model": judge, "base_url": "http://127.0.0.1:1/v1", "caveat": caveat},
        "overrides": {"retrieval": {"alpha": name}},
        "summary": {m: metric_summary(v, [None if x is not None else "judge timed out" for x in v]) for m, v in scores.items()},
        "latency": {},
    }
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return folder


def test_deltas_pair_only_questions_scored_in_both(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a", "base", {"faithfulness": [0.5, 0.2, None, 1.0, 0.4], "ndcg@10": [0.1, 0.2, 0.3, 0.4, 0.5]})
    other = write_run(tmp_path / "b", "new", {"faithfulness": [0.9, None, 0.7, 0.6, 0.7], "ndcg@10": [0.1, 0.2, 0.3, 0.4, 0.5]})
    c = compare_runs([base, other])
    faith = c["comparisons"][0]["metrics"]["faithfulness"]
    # Pairs: q0 (0.5 -> 0.9), q3 (1.0 -> 0.6), q4 (0.4 -> 0.7); q1 and q2 are missing on one side.
    a, b = [0.9, 0.6, 0.7], [0.5, 1.0, 0.4]
    assert faith["n"] == 3
    assert faith["delta"] == pytest.approx(sum(a) / 3 - sum(b) / 3)
    assert faith["p_value"] == paired_randomization_test(a, b)
    assert (faith["ci_low"], faith["ci_high"]) == paired_bootstrap_ci(a, b)
    assert [m["id"] for m in faith["improved"]] == ["q0", "q4"] and [m["id"] for m in faith["regressed"]] == ["q3"]
    assert faith["improved"][0]["delta"] == pytest.approx(0.4)
    ndcg = c["comparisons"][0]["metrics"]["ndcg@10"]
    assert ndcg["delta"] == 0 and ndcg["p_value"] == 1.0 and not ndcg["significant"]
    assert ndcg["improved"] == [] and ndcg["regressed"] == []
    assert c["warnings"] == [] and c["baseline"] == "base"
    write_comparison(tmp_path / "cmp", c)
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert "question &lt;q0&gt;" in html and "<q0>" not in html
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["schema_version"] == 1
    assert "| new | faithfulness | 3 |" in (tmp_path / "cmp" / "report.md").read_text()


def test_a_clear_improvement_is_significant(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a", "base", {"recall@10": [0.2] * 12})
    other = write_run(tmp_path / "b", "new", {"recall@10": [0.2 + 0.05 * (i % 3 + 1) for i in range(12)]})
    m = compare_runs([base, other])["comparisons"][0]["metrics"]["recall@10"]
    assert m["significant"] and m["p_value"] < 0.01 and m["ci_low"] > 0


def test_warnings_for_other_judges_test_sets_and_weak_judges(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a", "base", {"faithfulness": [0.5, 0.6]}, caveat="smoke-test scores only")
    other = write_run(tmp_path / "b", "new", {"faithfulness": [0.5, 0.7]}, judge="judge-b", sha="t" * 64)
    warnings = compare_runs([base, other])["warnings"]
    assert "smoke-test" in warnings[0]
    assert any("another test set" in w for w in warnings) and any("judge scores may not be comparable" in w for w in warnings)


def test_compare_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    run = write_run(tmp_path / "a", "base", {"faithfulness": [0.5]})
    with pytest.raises(ConfigError, match="at least two"):
        compare_runs([run])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no finished rag eval run"):
        compare_runs([run, tmp_path / "empty"])
    newer = json.loads((run / "results.json").read_text())
    newer["schema_version"] = 99
    write_run(tmp_path / "b", "b", {"faithfulness": [0.5]})
    (tmp_path / "b" / "results.json").write_text(json.dumps(newer))
    with pytest.raises(ConfigError, match="report schema 99"):
        compare_runs([run, tmp_path / "b"])


def test_summary_counts_missing_and_bounds_the_mean() -> None:
    summary = metric_summary([0.2, None, 0.8, 0.5, None], [None, "timed out", None, None, "did not parse"])
    assert summary["n"] == 3 and summary["missing"] == 2
    assert summary["missing_reasons"] == {"timed out": 1, "did not parse": 1}
    assert summary["mean"] == pytest.approx(0.5) and summary["ci_low"] <= 0.5 <= summary["ci_high"]
    assert metric_summary([None], ["x"])["mean"] is None
    # One scored question has no spread: no interval rather than [0.875, 0.875].
    one = metric_summary([0.875, None], [None, "x"])
    assert one["mean"] == 0.875 and one["ci_low"] is None and one["ci_high"] is None


def embedded_judge(port: int, max_tokens: int = 768) -> dict:
    identity = {"model": "SmolLM2-135M-Instruct", "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf", "gguf_bytes": 94000000,
                "max_tokens": max_tokens, "temperature": 0.01, "json_schema": True, "schema_bounds": [8, 200],
                "n_ctx": 8192, "cache_prompt": False, "seed": 0}
    return {"model": "SmolLM2-135M-Instruct", "base_url": f"http://127.0.0.1:{port}/v1", "embedded": True,
            "caveat": "smoke-test scores only", "threads": port % 3 + 1, "timeout_s": 600.0 + port,
            "identity": identity}


def test_the_embedded_judge_is_its_model_file_not_its_port(tmp_path: Path) -> None:
    scores = {"faithfulness": [0.5, 0.6]}
    base = write_run(tmp_path / "a", "base", scores, judge_info=embedded_judge(41001))
    other = write_run(tmp_path / "b", "new", scores, judge_info=embedded_judge(52002))  # other port, threads, timeout
    c = compare_runs([base, other])
    assert not any("judge scores may not be comparable" in w for w in c["warnings"])
    assert c["runs"][0]["judge"] == c["runs"][1]["judge"]
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in c["runs"][0]["judge"] and "41001" not in c["runs"][0]["judge"]
    # A setting that shapes the replies does make the judges differ.
    longer = write_run(tmp_path / "c", "longer", scores, judge_info=embedded_judge(41001, max_tokens=1536))
    warnings = compare_runs([base, longer])["warnings"]
    assert any("max_tokens 1536" in w and "judge scores may not be comparable" in w for w in warnings)
    # Runs written before the identity was recorded: the embedded judge is still not its URL.
    old = [{k: v for k, v in embedded_judge(port).items() if k != "identity"} for port in (1, 2)]
    first = write_run(tmp_path / "d", "d", scores, judge_info=old[0])
    second = write_run(tmp_path / "e", "e", scores, judge_info=old[1])
    assert not any("may not be comparable" in w for w in compare_runs([first, second])["warnings"])


def test_too_few_pairs_are_said_to_be_unable_to_show_a_difference(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a", "base", {"faithfulness": [0.1, 0.2, 0.3, None, None, None], "mrr@10": [0.1] * 6})
    other = write_run(tmp_path / "b", "new", {"faithfulness": [0.9, 0.9, 0.9, 0.5, 0.5, 0.5], "mrr@10": [0.9] * 6})
    c = compare_runs([base, other])
    few, six = c["comparisons"][0]["metrics"]["faithfulness"], c["comparisons"][0]["metrics"]["mrr@10"]
    # Three pairs all moving up: the best a sign-flip test can say is p = 2/8.
    assert few["p_value"] == few["min_p_value"] == 0.25 and not few["significant"]
    assert "no difference can be significant" in few["note"] and "0.25" in few["note"]
    assert six["min_p_value"] == 2 / 64 and six["note"] is None and six["significant"]
    write_comparison(tmp_path / "cmp", c)
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert "no difference can be significant" in html and "Too few questions" in (tmp_path / "cmp" / "report.md").read_text()
    # The plot shows paired differences with their pair counts, not each run's unpaired mean.
    plot = html[html.index('id="plot-deltas"'):]
    assert "<svg" in plot[:200] and "n=3" in plot and "n=6" in plot and "paired by question" in plot


def test_grid_parsing() -> None:
    grid = parse_grid(["retrieval.alpha=0,0.5,1", 'retrieval.fusion=["linear","rrf"]'])
    assert grid == [("retrieval.alpha", [0, 0.5, 1]), ("retrieval.fusion", ["linear", "rrf"])]
    combos = combinations(grid)
    assert len(combos) == 6 and combos[1] == {"retrieval.alpha": 0, "retrieval.fusion": "rrf"}
    assert nested(combos[1], {"llm": {"max_tokens": 9}}) == {"llm": {"max_tokens": 9}, "retrieval": {"alpha": 0, "fusion": "rrf"}}
    for bad, message in (("alpha=1", "expects"), ("retrieval.alpha=", "expects"), ("retrieval.alpha=1,,2", "empty value")):
        with pytest.raises(ConfigError, match=message):
            parse_grid([bad])
    with pytest.raises(ConfigError, match="twice"):
        parse_grid(["retrieval.k=1", "retrieval.k=2"])

