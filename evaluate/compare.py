"""Run-to-run comparison: per-metric means and deltas, a paired significance test, and the questions
that moved most.

The first run is the baseline. Questions are paired by id, and a metric is compared on the questions
scored in both runs (a missing score is never paired as 0). Per metric and run the comparison gives the mean
of each side on those pairs, the mean difference with its bootstrap confidence interval, and the two-sided
p-value of a paired randomization (sign-flip) test (:mod:`rag.evaluate.significance`); where too few pairs
differ for any p-value to fall below 0.05 (fewer than 6), the comparison says so. Runs on different
test sets or with different judges are compared anyway, with a warning in the report: their scores may not
be comparable.

Writes ``comparison.json`` (schema versioned), ``report.md`` and ``report.html`` into the output folder.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from rag.core.errors import ConfigError
from rag.evaluate import plots
from rag.evaluate.report import _kv_table, _md, _write, esc, fmt, page
from rag.evaluate.schema import SCHEMA_VERSION as RUN_SCHEMA_VERSION
from rag.evaluate.significance import paired_bootstrap_ci, paired_randomization_test, smallest_p_value

SCHEMA_VERSION = 1  # of comparison.json; a run folder's files carry RUN_SCHEMA_VERSION
TOP_MOVERS = 5
ALPHA = 0.05


def load_run(folder: Path | str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(results, samples)`` of a finished run folder.

    Raises:
        ConfigError: the folder holds no finished run, or a newer report schema.
    """
    folder = Path(folder)
    results_path = folder / "results.json"
    if not results_path.is_file():
        raise ConfigError(f"{folder} holds no finished rag eval run (no results.json); run `rag eval run` first")
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
        with (folder / "samples.jsonl").open(encoding="utf-8") as fh:
            samples = [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the run in {folder}: {exc}") from None
    if results.get("kind") != "rag-eval-run":
        raise ConfigError(f"{results_path} is not a rag eval run report")
    if int(results.get("schema_version", 0)) > RUN_SCHEMA_VERSION:
        raise ConfigError(f"{results_path} has report schema {results['schema_version']}; upgrade rag-platform to read it")
    return results, samples


def compare_runs(folders: list[Path | str], names: list[str] | None = None) -> dict[str, Any]:
    """The comparison of two or more run folders (see the module docstring).

    Raises:
        ConfigError: fewer than two runs, or one cannot be read.
    """
    if len(folders) < 2:
        raise ConfigError("compare needs at least two run folders")
    runs = [load_run(folder) for folder in folders]
    labels = names or _labels([results.get("name") or Path(f).name for (results, _), f in zip(runs, folders)])
    base_results, base_samples = runs[0]
    metrics = [m for m in base_results["metrics"] if all(m in r["metrics"] for r, _ in runs[1:])]
    warnings: list[str] = []
    for label, (results, _) in zip(labels[1:], runs[1:]):
        if results["testset"]["sha256"] != base_results["testset"]["sha256"]:
            warnings.append(f"{label} ran another test set than {labels[0]}; only questions with the same id are paired")
        if _judge_id(results) != _judge_id(base_results):
            warnings.append(f"{label} was judged by {_judge_id(results)}, {labels[0]} by {_judge_id(base_results)}: "
                            "judge scores may not be comparable")
        left_out = sorted(set(results["metrics"]) ^ set(base_results["metrics"]))
        if left_out:
            warnings.append(f"metrics not in every run, left out: {', '.join(left_out)}")
    if any((r.get("judge") or {}).get("caveat") for r, _ in runs):
        warnings.insert(0, "at least one run was judged by the embedded 135M model: its judge scores are smoke-test scores only")
    base_by_id = {s["id"]: s for s in base_samples}
    comparisons = []
    for label, (_results, samples) in zip(labels[1:], runs[1:]):
        by_id = {s["id"]: s for s in samples}
        per_metric = {}
        for metric in metrics:
            pairs = []
            for qid, base in base_by_id.items():
                other = by_id.get(qid)
                if other is None:
                    continue
                a, b = other["scores"][metric]["value"], base["scores"][metric]["value"]
                if a is not None and b is not None:
                    pairs.append((qid, b, a))
            per_metric[metric] = _paired(pairs, base_by_id, by_id)
        comparisons.append({"run": label, "metrics": per_metric})
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "rag-eval-comparison",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "baseline": labels[0],
        "runs": [
            {"label": label, "folder": str(Path(folder)), "name": results.get("name"), "overrides": results.get("overrides"),
             "testset": results["testset"], "judge": _judge_id(results), "caveat": (results.get("judge") or {}).get("caveat"),
             "summary": {m: results["summary"][m] for m in metrics}, "latency": results.get("latency", {})}
            for label, folder, (results, _) in zip(labels, folders, runs)
        ],
        "metrics": metrics,
        "comparisons": comparisons,
        "warnings": warnings,
        "alpha": ALPHA,
    }


def _labels(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return labels


def _judge_id(results: dict[str, Any]) -> str:
    """Who judged and with which reply-shaping settings, as text; equal for runs whose judges are the same.

    The embedded judge is its model file (name and size), never its URL: its port is random per run.
    Threads, timeouts, retries and the cache file do not change replies and are left out.
    """
    judge = results.get("judge")
    if not judge:
        return "no judge"
    identity = judge.get("identity")
    if identity is None:  # a run written before the identity was recorded
        return f"embedded {judge['model']}" if judge.get("embedded") else f"{judge['model']} at {judge['base_url']}"
    if "gguf" in identity:
        who = f"embedded {identity['model']} ({identity['gguf']}, {identity['gguf_bytes']} bytes)"
    else:
        who = f"{identity['model']} at {identity['base_url']}"
    shown = ("max_tokens", "temperature", "json_schema", "schema_bounds", "n_ctx")
    return who + " with " + ", ".join(f"{k} {identity[k]}" for k in shown if identity.get(k) is not None)


def _paired(pairs: list[tuple[str, float, float]], base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    if not pairs:
        return {"n": 0, "baseline_mean": None, "mean": None, "delta": None, "ci_low": None, "ci_high": None,
                "p_value": None, "min_p_value": None, "significant": False, "note": None, "improved": [], "regressed": []}
    b = [p[1] for p in pairs]
    a = [p[2] for p in pairs]
    delta = statistics.fmean(a) - statistics.fmean(b)
    low, high = paired_bootstrap_ci(a, b)
    p_value = paired_randomization_test(a, b)
    floor = smallest_p_value(a, b)
    note = None
    if floor >= ALPHA:
        note = (f"{len(pairs)} paired questions ({sum(x != y for x, y in zip(a, b))} differing): the smallest p-value "
                f"possible is {floor:.3g}, so no difference can be significant at {ALPHA}; compare more questions")
    moves = sorted(((p[2] - p[1], p[0]) for p in pairs), key=lambda m: m[0])

    def mover(diff: float, qid: str) -> dict[str, Any]:
        return {"id": qid, "question": base[qid]["question"], "delta": diff,
                "baseline": base[qid]["scores"], "run": other[qid]["scores"]}

    improved = [mover(d, q) for d, q in reversed(moves) if d > 0][:TOP_MOVERS]
    regressed = [mover(d, q) for d, q in moves if d < 0][:TOP_MOVERS]
    return {"n": len(pairs), "baseline_mean": statistics.fmean(b), "mean": statistics.fmean(a), "delta": delta,
            "ci_low": low, "ci_high": high, "p_value": p_value, "min_p_value": floor, "significant": p_value < ALPHA,
            "note": note,
            "improved": [{k: v for k, v in m.items() if k not in ("baseline", "run")} for m in improved],
            "regressed": [{k: v for k, v in m.items() if k not in ("baseline", "run")} for m in regressed]}


def write_comparison(out: Path | str, comparison: dict[str, Any]) -> None:
    """Write ``comparison.json``, ``report.md`` and ``report.html`` into ``out``."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out}: {exc.strerror or exc}") from None
    _write(out / "comparison.json", json.dumps(comparison, indent=2, ensure_ascii=False))
    _write(out / "report.md", comparison_markdown(comparison))
    _write(out / "report.html", comparison_html(comparison))


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def _delta_ci(m: dict[str, Any]) -> str:
    return "—" if m["ci_low"] is None else f"[{m['ci_low']:+.3f}, {m['ci_high']:+.3f}]"


def _p(value: float | None) -> str:
    return "—" if value is None else (f"{value:.4f}" if value >= 0.0001 else f"{value:.1e}")


def comparison_markdown(c: dict[str, Any]) -> str:
    lines = ["# rag eval comparison", "", f"Baseline: `{_md(c['baseline'])}`. Deltas are run minus baseline on the "
             f"questions scored in both; p from a paired randomization test (significant below {c['alpha']}).", ""]
    for warning in c["warnings"]:
        lines.append(f"> warning: {_md(warning)}")
    lines += ["", "## Runs", "", "| run | overrides | judge | " + " | ".join(c["metrics"]) + " |",
              "|---|---|---|" + "---|" * len(c["metrics"])]
    for run in c["runs"]:
        means = [f"{fmt(run['summary'][m]['mean'])} (n={run['summary'][m]['n']})" for m in c["metrics"]]
        lines.append(f"| {_md(run['label'])} | `{_md(json.dumps(run['overrides'] or {}, sort_keys=True))}` | "
                     f"{_md(run['judge'])} | " + " | ".join(means) + " |")
    lines += ["", "## Deltas against the baseline", "", "| run | metric | n | baseline | run | delta | 95% CI | p |",
              "|---|---|---|---|---|---|---|---|"]
    for comp in c["comparisons"]:
        for metric, m in comp["metrics"].items():
            lines.append(f"| {_md(comp['run'])} | {metric} | {m['n']} | {fmt(m['baseline_mean'])} | {fmt(m['mean'])} | "
                         f"{_signed(m['delta'])}{' *' if m['significant'] else ''} | "
                         f"{_delta_ci(m)} | {_p(m['p_value'])} |")
    notes = [f"- {_md(comp['run'])} · {metric}: {_md(m['note'])}" for comp in c["comparisons"]
             for metric, m in comp["metrics"].items() if m.get("note")]
    if notes:
        lines += ["", "Too few questions to tell:", "", *notes]
    lines += ["", "## Questions that moved most", ""]
    for comp in c["comparisons"]:
        for metric, m in comp["metrics"].items():
            for kind in ("improved", "regressed"):
                for item in m[kind]:
                    lines.append(f"- {_md(comp['run'])} · {metric} · {kind} {item['delta']:+.3f}: "
                                 f"{_md(item['id'])} {_md(item['question'])}")
    lines.append("")
    return "\n".join(lines)


def comparison_html(c: dict[str, Any]) -> str:
    metrics = c["metrics"]
    out = ["<h1>rag eval comparison</h1>",
           f"<p class=\"muted\">created {esc(c['created'])} · baseline <b>{esc(c['baseline'])}</b> · deltas are run minus "
           f"baseline on the questions scored in both · p from a paired randomization test, significant below {c['alpha']}</p>"]
    for warning in c["warnings"]:
        cls = "caveat" if "smoke-test" in warning else "note"
        out.append(f"<div class=\"{cls}\">{esc(warning)}</div>")
    out.append("<h2>Runs</h2><table class=\"sortable\" id=\"runs\"><thead><tr>"
               + "".join(f"<th class=\"sortable\" data-col=\"{i}\">{esc(h)}</th>"
                         for i, h in enumerate(["run", "overrides", "judge", *metrics])) + "</tr></thead><tbody>")
    for run in c["runs"]:
        cells = [f"<td data-sort=\"{esc(run['label'])}\">{esc(run['label'])}</td>",
                 f"<td data-sort=\"\"><code>{esc(json.dumps(run['overrides'] or {}, sort_keys=True))}</code></td>",
                 f"<td data-sort=\"{esc(run['judge'])}\">{esc(run['judge'])}</td>"]
        for m in metrics:
            s = run["summary"][m]
            ci = "" if s.get("ci_low") is None else f"<br><small class=\"muted\">[{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]</small>"
            ci += f"<br><small class=\"muted\">n={s['n']}</small>"
            key = "" if s["mean"] is None else f"{s['mean']:.6f}"
            cells.append(f"<td class=\"num\" data-sort=\"{key}\">{fmt(s['mean'])}{ci}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    out.append("<p class=\"muted\">Means over each run's own scored questions (n in the summary); the plot below "
               "pairs questions.</p>")
    out.append("<h2>Deltas against the baseline</h2><table class=\"sortable\" id=\"deltas\"><thead><tr>"
               + "".join(f"<th class=\"sortable\" data-col=\"{i}\">{esc(h)}</th>" for i, h in enumerate(
                   ["run", "metric", "n", "baseline", "run mean", "delta", "95% CI", "p"])) + "</tr></thead><tbody>")
    for comp in c["comparisons"]:
        for metric, m in comp["metrics"].items():
            cls = "" if not m["significant"] else (" better" if m["delta"] > 0 else " worse")
            ci = _delta_ci(m)
            out.append(
                f"<tr><td data-sort=\"{esc(comp['run'])}\">{esc(comp['run'])}</td><td data-sort=\"{esc(metric)}\">{esc(metric)}</td>"
                f"<td class=\"num\" data-sort=\"{m['n']}\">{m['n']}</td>"
                f"<td class=\"num\" data-sort=\"{'' if m['baseline_mean'] is None else m['baseline_mean']}\">{fmt(m['baseline_mean'])}</td>"
                f"<td class=\"num\" data-sort=\"{'' if m['mean'] is None else m['mean']}\">{fmt(m['mean'])}</td>"
                f"<td class=\"num{cls}\" data-sort=\"{'' if m['delta'] is None else m['delta']}\">{_signed(m['delta'])}"
                f"{' *' if m['significant'] else ''}</td><td class=\"num\" data-sort=\"\">{ci}</td>"
                f"<td class=\"num\" data-sort=\"{'' if m['p_value'] is None else m['p_value']}\">{_p(m['p_value'])}</td></tr>")
    out.append("</tbody></table>")
    for comp in c["comparisons"]:
        for metric, m in comp["metrics"].items():
            if m.get("note"):
                out.append(f"<div class=\"note small-n\">{esc(comp['run'])} · {esc(metric)}: {esc(m['note'])}</div>")
    out.append("<div class=\"plots\" id=\"plot-deltas\">" + plots.paired_deltas(
        {comp["run"]: {metric: (m["delta"], m["ci_low"], m["ci_high"], m["n"]) for metric, m in comp["metrics"].items()}
         for comp in c["comparisons"]}, baseline=c["baseline"]) + "</div>")
    out.append("<h2>Questions that moved most</h2>")
    for comp in c["comparisons"]:
        for metric, m in comp["metrics"].items():
            if not (m["improved"] or m["regressed"]):
                continue
            out.append(f"<h3>{esc(comp['run'])} · {esc(metric)}</h3><table><thead><tr><th>change</th><th>delta</th><th>id</th>"
                       "<th>question</th></tr></thead><tbody>")
            for kind in ("improved", "regressed"):
                for item in m[kind]:
                    out.append(f"<tr><td class=\"{'better' if kind == 'improved' else 'worse'}\">{kind}</td>"
                               f"<td class=\"num\">{item['delta']:+.3f}</td><td>{esc(item['id'])}</td><td>{esc(item['question'])}</td></tr>")
            out.append("</tbody></table>")
    out.append("<h2>Run folders</h2>" + _kv_table([(run["label"], f"{run['folder']} · test set {run['testset']['sha256'][:16]}…")
                                                  for run in c["runs"]]))
    return page("rag eval comparison", "\n".join(out))
