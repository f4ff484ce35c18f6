"""Run reports: ``results.json`` (schema versioned), ``samples.jsonl``, ``report.md`` and ``report.html``.

``report.html`` is one self-contained file: inline CSS, a few lines of inline JavaScript to sort the
per-question table, and plots rendered by matplotlib to inline SVG. It loads nothing from the network, so it
opens offline and can be attached to a ticket. Every piece of data (questions, answers, contexts, the judge's
reasons) is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
import platform
import statistics
import sys
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

from rag.evaluate import plots
from rag.evaluate.calibration import calibration_notes, calibration_summary, labelled_probabilities
from rag.evaluate.schema import SCHEMA_VERSION
from rag.evaluate.significance import bootstrap_mean_ci

CONFIDENCE = 0.95


def versions() -> dict[str, str]:
    """Versions of everything that shapes a score."""
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("rag-platform", "ragas", "openai", "instructor", "sentence-transformers", "xllamacpp", "matplotlib"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


MIN_CI_N = 2
"""Fewer scored questions than this get no confidence interval (one value has no spread to resample)."""


def metric_summary(values: list[float | None], reasons: list[str | None]) -> dict[str, Any]:
    """Mean, bootstrap CI, spread and the count of missing scores (with their reasons) of one metric.

    The CI is ``None`` with fewer than :data:`MIN_CI_N` scored questions.
    """
    present = [v for v in values if v is not None]
    missing = Counter(r or "unknown" for v, r in zip(values, reasons) if v is None)
    summary: dict[str, Any] = {"n": len(present), "missing": len(values) - len(present),
                               "missing_reasons": dict(missing.most_common())}
    if present:
        mean = statistics.fmean(present)
        low, high = bootstrap_mean_ci(present, confidence=CONFIDENCE) if len(present) >= MIN_CI_N else (None, None)
        summary.update(mean=mean, ci_low=low, ci_high=high, median=statistics.median(present),
                       min=min(present), max=max(present))
    else:
        summary.update(mean=None, ci_low=None, ci_high=None, median=None, min=None, max=None)
    return summary


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = (len(ordered) - 1) * q
    low, high = math.floor(index), math.ceil(index)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def latency_series(samples: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Milliseconds per stage over the questions: retrieval, its stages (when reported), generation, total."""
    series: dict[str, list[float]] = {}
    for sample in samples:
        timings = sample.get("timings") or {}
        if "retrieval_ms" in timings:
            series.setdefault("retrieval", []).append(timings["retrieval_ms"])
        for stage, ms in (timings.get("stages") or {}).items():
            series.setdefault(f"retrieval: {stage}", []).append(ms)
        if "generation_ms" in timings:
            series.setdefault("generation", []).append(timings["generation_ms"])
        if "total_ms" in timings:
            series.setdefault("total", []).append(timings["total_ms"])
    return series


def summarize(spec: Any, samples: list[dict[str, Any]], judge: Any, calls: dict[str, Any], *,
              answer_seconds: float, judge_seconds: float, total_seconds: float,
              reused: set[str] | None = None) -> dict[str, Any]:
    """The content of ``results.json`` for a run (see the module docstring of :mod:`rag.evaluate.run`).

    ``reused`` are the ids of questions whose answers came from the checkpoint of an earlier, interrupted
    or finished run in the same folder: ``answer_seconds`` does not include them, ``reused_answer_seconds``
    is what they took when they were made.
    """
    summary = {}
    for metric in spec.metrics:
        scores = [s["scores"][metric.name] for s in samples]
        summary[metric.name] = metric_summary([sc["value"] for sc in scores], [sc["missing"] for sc in scores])
    latency = {
        stage: {"n": len(ms), "mean_ms": statistics.fmean(ms), "p50_ms": _percentile(ms, 0.5),
                "p95_ms": _percentile(ms, 0.95)}
        for stage, ms in latency_series(samples).items() if ms
    }
    errors = sum(1 for s in samples if s.get("error"))
    reused = reused or set()
    reused_ms = sum((s.get("timings") or {}).get("total_ms", 0.0) for s in samples if s["id"] in reused)
    judge_info = None
    if judge is not None and spec.judge_metrics:
        judge_info = {**judge.describe(), "calls": calls}
    calibration = calibration_summary(
        samples, metrics=[m.name for m in spec.metrics], threshold=spec.settings.retrieval.answerable_threshold,
        k=spec.options.resolve(spec.settings).k, confidence=CONFIDENCE,
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "rag-eval-run",
        "name": spec.name or spec.out.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "testset": spec.testset.describe(),
        "collection": spec.collection,
        "overrides": spec.overrides,
        "config": spec.settings.model_dump(mode="json"),
        "metrics": [m.name for m in spec.metrics],
        "judge": judge_info,
        "versions": versions(),
        "summary": summary,
        "latency": latency,
        "timing": {
            "answer_seconds": round(answer_seconds, 3),
            "answers_reused": len(reused),
            "reused_answer_seconds": round(reused_ms / 1000, 3),
            "judge_seconds": round(judge_seconds, 3),
            "total_seconds": round(total_seconds, 3),
            "judge_seconds_per_question": round(judge_seconds / len(samples), 3) if samples else None,
        },
        "generation_errors": errors,
        "calibration": calibration,
        "notes": list(spec.notes),
        "confidence": CONFIDENCE,
    }


def write_run(out: Path, results: dict[str, Any], samples: list[dict[str, Any]]) -> None:
    """Write the four report files of a run into ``out`` (each replaced atomically)."""
    _write(out / "results.json", json.dumps(results, indent=2, ensure_ascii=False))
    _write(out / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    _write(out / "report.md", run_markdown(results, samples))
    _write(out / "report.html", run_html(results, samples))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ci(summary: dict[str, Any]) -> str:
    if summary.get("mean") is None:
        return "—"
    if summary.get("ci_low") is None:
        return f"— (n < {MIN_CI_N})"
    return f"[{fmt(summary['ci_low'])}, {fmt(summary['ci_high'])}]"


def answering_text(timing: dict[str, Any]) -> str:
    """How the answers came about: made now (seconds), reused from the earlier run in the folder, or both."""
    reused = timing.get("answers_reused") or 0
    seconds = timing["answer_seconds"]
    if not reused:
        return f"answering {seconds:.1f} s"
    earlier = f"{timing.get('reused_answer_seconds') or 0:.1f} s when they were made"
    if not seconds:
        return f"answers reused from the earlier run ({reused} questions, {earlier})"
    return f"answering {seconds:.1f} s, plus {reused} answers reused from the earlier run ({earlier})"


def small_n_note(summary: dict[str, dict[str, Any]]) -> str | None:
    """A note when a metric has too few scored questions for a confidence interval."""
    few = [name for name, s in summary.items() if s.get("mean") is not None and s.get("ci_low") is None]
    if not few:
        return None
    return (f"{', '.join(few)}: fewer than {MIN_CI_N} scored questions, so no confidence interval; "
            "a mean of so few questions says little")


def _declined_text(section: dict[str, Any]) -> str:
    declined = section["declined"]
    text = (f"{declined['count']} of {section['probabilities']} questions ({declined['share']:.0%}) are below "
            f"retrieval.answerable_threshold {section['threshold']:g}, which ask declines")
    if declined["count"] and "answerable" in declined:
        text += f"; of them {declined['answerable']} labelled answerable, {declined['unanswerable']} unanswerable"
    return text


def calibration_rows(section: dict[str, Any]) -> list[tuple[str, str]]:
    """The calibration section's figures as (name, value) lines, the same in Markdown and HTML."""
    rows = [("questions with a probability",
             f"{section['probabilities']}" + (f" ({section['no_probability']} without: the store's native hybrid "
                                             "search, or answers from an earlier version, give none)"
                                             if section["no_probability"] else "")),
            ("mean probability", fmt(section["mean_probability"])),
            ("threshold", _declined_text(section))]
    if not section.get("label"):
        return rows
    rows.append(("labelled questions", f"n = {section['n']}: {section['answerable']} answerable, "
                 f"{section['unanswerable']} unanswerable" + (" (too few to judge by)" if section["small_n"] else "")))
    if section.get("brier") is not None:
        rows.append(("Brier score", f"{fmt(section['brier'])} (0 is perfect; always saying 0.5 scores 0.250)"))
    if section.get("auroc") is not None:
        ci = section.get("auroc_ci")
        rows.append(("AUROC", fmt(section["auroc"]) + (f" [{fmt(ci[0])}, {fmt(ci[1])}] ({int(section['confidence'] * 100)}% "
                                                     "stratified bootstrap)" if ci else "")))
    return rows


def _answerable(sample: dict[str, Any]) -> float | None:
    return sample.get("answerable")


def _has_answerable(samples: list[dict[str, Any]]) -> bool:
    return any(_answerable(s) is not None for s in samples)


# -- Markdown -----------------------------------------------------------------------------------------


def _md(text: Any) -> str:
    """Table-safe Markdown text: pipes escaped, line breaks flattened."""
    return " ".join(str(text).split()).replace("|", "\\|")


def run_markdown(results: dict[str, Any], samples: list[dict[str, Any]]) -> str:
    lines = [f"# rag eval: {_md(results['name'])}", ""]
    judge = results.get("judge")
    if judge and judge.get("caveat"):
        lines += [f"> **Smoke-test scores only.** {_md(judge['caveat'])}", ""]
    ts = results["testset"]
    lines += [
        f"Test set `{_md(ts['source'])}` ({ts['questions']} questions, sha256 `{ts['sha256'][:16]}…`), "
        f"collection `{_md(results['collection'])}`, created {results['created']}.", "",
    ]
    if judge:
        lines += [f"Judge: `{_md(judge['model'])}` at `{_md(judge['base_url'])}` (RAGAS {judge['ragas']}, "
                  f"max_tokens {judge['max_tokens']}; calls sent {judge['calls'].get('sent', 0)}, "
                  f"from cache {judge['calls'].get('cached', 0)}, failed {judge['calls'].get('failed', 0)}).", ""]
    if results.get("overrides"):
        lines += [f"Overrides: `{_md(json.dumps(results['overrides'], sort_keys=True))}`", ""]
    for note in results.get("notes", []):
        lines.append(f"- note: {_md(note)}")
    if note := small_n_note(results["summary"]):
        lines.append(f"- note: {_md(note)}")
    if results.get("generation_errors"):
        lines.append(f"- {results['generation_errors']} question(s) got no answer (generation failed)")
    lines += ["", "## Summary", "", "| metric | mean | 95% CI | scored | missing |", "|---|---|---|---|---|"]
    for name, s in results["summary"].items():
        reasons = "; ".join(f"{_md(r)} ({c})" for r, c in s["missing_reasons"].items())
        lines.append(f"| {name} | {fmt(s['mean'])} | {_ci(s)} | {s['n']} | {s['missing']}"
                     f"{': ' + reasons if reasons else ''} |")
    lines += ["", "## Latency per question", "", "| stage | mean ms | p50 ms | p95 ms |", "|---|---|---|---|"]
    for stage, s in results["latency"].items():
        lines.append(f"| {_md(stage)} | {s['mean_ms']:.1f} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} |")
    timing = results["timing"]
    lines += ["", f"{answering_text(timing)[:1].upper()}{answering_text(timing)[1:]}; judging {timing['judge_seconds']:.1f} s "
              f"({timing['judge_seconds_per_question'] or 0:.1f} s per question); {timing['total_seconds']:.1f} s in all.", ""]
    if section := results.get("calibration"):
        lines += ["## Answerability calibration", ""]
        lines += [f"- note: {_md(note)}" for note in calibration_notes(section)]
        lines += [f"- {name}: {_md(value)}" for name, value in calibration_rows(section)]
        if section.get("bins"):
            lines += ["", "| predicted probability | questions | mean predicted | observed rate |", "|---|---|---|---|"]
            lines += [f"| {b['low']:.1f}–{b['high']:.1f} | {b['count']} | {fmt(b['mean_predicted'])} | "
                      f"{fmt(b['observed_rate'])} |" for b in section["bins"]]
        lines.append("")
    metrics = results["metrics"]
    shown = _has_answerable(samples)
    extra = " answerable |" if shown else ""
    lines += ["## Questions", "", "| id | question | " + " | ".join(metrics) + f" |{extra}",
              "|---|---|" + "---|" * (len(metrics) + shown)]
    for sample in samples:
        cells = []
        for name in metrics:
            score = sample["scores"][name]
            cells.append(fmt(score["value"]) if score["value"] is not None else f"— ({_md(score['missing'])})")
        if shown:
            cells.append(fmt(_answerable(sample)))
        lines.append(f"| {_md(sample['id'])} | {_md(sample['question'])} | " + " | ".join(cells) + " |")
    v = results["versions"]
    lines += ["", "## Versions", "", ", ".join(f"{k} {_md(val)}" for k, val in v.items()), ""]
    return "\n".join(lines)


# -- HTML ---------------------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1400px;padding:0 16px;color:#1b1f24}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.muted{color:#57606a}.caveat{background:#fff8c5;border:1px solid #d4a72c;padding:10px 14px;border-radius:6px;margin:12px 0}
.note{background:#f6f8fa;border-left:3px solid #8c959f;padding:4px 10px;margin:4px 0}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #d0d7de;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f6f8fa}th.sortable{cursor:pointer;user-select:none}th.sortable:after{content:" \\2195";color:#8c959f}
th.asc:after{content:" \\2191";color:#1b1f24}th.desc:after{content:" \\2193";color:#1b1f24}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.missing{color:#9a6700}
.err{color:#cf222e}pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;background:#f6f8fa;padding:6px;border-radius:4px}
.ok{color:#1a7f37}.bad{color:#cf222e}details summary{cursor:pointer;color:#0969da}.plots svg{max-width:100%;height:auto}
#questions td.question{min-width:200px}#questions td.answer{min-width:240px}
#questions tr.detail>td{background:#fbfcfd;padding:2px 12px}.reasons{max-width:120ch}
.reasons table.claims{width:auto;max-width:100%;margin:4px 0 8px}.reasons table.claims td{font-size:13px}
.judged{color:#9a6700}#reliability{width:auto;min-width:480px;margin-top:8px}
.kv td:first-child{white-space:nowrap;font-weight:600;width:1%}.better{color:#1a7f37}.worse{color:#cf222e}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th.sortable').forEach(function (th, index) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      // A row.detail (a question's reasons and contexts) moves with the row above it.
      var groups = [];
      Array.prototype.forEach.call(body.rows, function (row) {
        if (row.classList.contains('detail') && groups.length) { groups[groups.length - 1].push(row); }
        else { groups.push([row]); }
      });
      var descending = !th.classList.contains('desc');
      table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
      th.classList.add(descending ? 'desc' : 'asc');
      var column = parseInt(th.getAttribute('data-col'), 10);
      groups.sort(function (ga, gb) {
        var x = ga[0].cells[column].getAttribute('data-sort'), y = gb[0].cells[column].getAttribute('data-sort');
        var nx = parseFloat(x), ny = parseFloat(y);
        if (x === '' || y === '') { return (x === '') - (y === ''); }
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return descending ? -order : order;
      });
      groups.forEach(function (group) { group.forEach(function (row) { body.appendChild(row); }); });
    });
  });
});
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n{body}\n"
        f"<script>{SORT_SCRIPT}</script></body></html>\n"
    )


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    return "<table class=\"kv\">" + "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _score_cell(score: dict[str, Any]) -> str:
    if score["value"] is None:
        return f"<td class=\"num missing\" data-sort=\"\" title=\"{esc(score['missing'])}\">—<br><small>{esc(score['missing'])}</small></td>"
    return f"<td class=\"num\" data-sort=\"{score['value']:.6f}\">{fmt(score['value'])}</td>"


def _verdict_mark(verdict: Any) -> str:
    return "<span class=\"ok\">✓</span>" if verdict else "<span class=\"bad\">✗</span>"


def _claims_table(score: dict[str, Any]) -> str:
    """Faithfulness: each claim the judge extracted from the answer next to its verdict and reason.

    The judge's n-th verdict is about its n-th claim; when the statement it judged is not that claim (a small
    judge may copy the prompt's own examples), the statement is shown too.
    """
    claims = score.get("claims") or []
    verdicts = [d for d in score.get("details") or [] if "verdict" in d]
    rows = []
    for index in range(max(len(claims), len(verdicts))):
        claim = claims[index] if index < len(claims) else None
        item = verdicts[index] if index < len(verdicts) else None
        judged = ""
        if item is not None and claim is not None and " ".join(str(item.get("item")).split()) != " ".join(claim.split()):
            judged = f"<br><small class=\"judged\">judged as: {esc(item.get('item'))}</small>"
        claim_cell = esc(claim) if claim is not None else "<span class=\"muted\">(no claim)</span>"
        verdict_cell = _verdict_mark(item["verdict"]) if item is not None else "<span class=\"muted\">no verdict</span>"
        reason = esc(item.get("reason")) if item is not None else ""
        rows.append(f"<tr><td class=\"num\">{index + 1}</td><td>{claim_cell}</td><td>{verdict_cell}</td>"
                    f"<td>{reason}{judged}</td></tr>")
    if not rows:
        return ""
    return ("<table class=\"claims\"><thead><tr><th>#</th><th>claim extracted from the answer</th><th>verdict</th>"
            "<th>judge's reason</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _reasons(sample: dict[str, Any]) -> str:
    parts = []
    for name, score in sample["scores"].items():
        if not score.get("summary") and not score.get("details") and score["value"] is not None:
            continue
        headline = score.get("summary") or score.get("missing") or ""
        if score.get("claims") is not None:
            errors = "".join(f"<li class=\"missing\">{esc(item.get('call'))}: {esc(item['error'])}"
                             f"{' (cached)' if item.get('cached') else ''}</li>"
                             for item in score.get("details") or [] if item.get("error"))
            parts.append(f"<p><b>{esc(name)}</b>: {esc(headline)}</p>" + _claims_table(score)
                         + (f"<ul>{errors}</ul>" if errors else ""))
            continue
        items = []
        for item in score.get("details") or []:
            if "verdict" in item:
                items.append(f"<li>{_verdict_mark(item['verdict'])} {esc(item.get('item'))} "
                             f"<span class=\"muted\">— {esc(item.get('reason'))}</span></li>")
            elif item.get("error"):
                items.append(f"<li class=\"missing\">{esc(item.get('call'))}: {esc(item['error'])}"
                             f"{' (cached)' if item.get('cached') else ''}</li>")
        parts.append(f"<p><b>{esc(name)}</b>: {esc(headline)}</p>" + (f"<ul>{''.join(items)}</ul>" if items else ""))
    return "".join(parts) or "<p class=\"muted\">no judge verdicts</p>"


def _contexts(sample: dict[str, Any]) -> str:
    blocks = []
    for ctx in sample.get("contexts") or []:
        label = ctx["source"] + (f" § {ctx['section']}" if ctx.get("section") else "")
        blocks.append(f"<p><b>[{ctx['number']}]</b> {esc(label)} <span class=\"muted\">score {ctx['score']:.3f}</span></p>"
                      f"<pre>{esc(ctx['text'])}</pre>")
    return "".join(blocks) or "<p class=\"muted\">nothing retrieved</p>"


def _header(name: str) -> str:
    """A questions-table header that may break (after an underscore or an @, or "answer-able" with a hyphen), so
    the table of seven metrics and the answerable probability fits a 1280-px window."""
    return "answer&shy;able" if name == "answerable" else esc(name).replace("_", "_<wbr>").replace("@", "@<wbr>")


def _probability_cell(value: float | None) -> str:
    if value is None:
        return "<td class=\"num missing\" data-sort=\"\">—</td>"
    return f"<td class=\"num\" data-sort=\"{value:.6f}\">{fmt(value)}</td>"


def _calibration_html(section: dict[str, Any], samples: list[dict[str, Any]], metrics: list[str]) -> str:
    """The answerability calibration section: notes, figures, the reliability table and its plot."""
    out = ["<h2 id=\"calibration\">Answerability calibration</h2>"]
    out += [f"<div class=\"note\">{esc(note)}</div>" for note in calibration_notes(section)]
    out.append(_kv_table(calibration_rows(section)))
    if section.get("bins"):
        out.append("<table id=\"reliability\"><thead><tr><th>predicted probability</th><th>questions</th>"
                   "<th>mean predicted</th><th>observed rate</th></tr></thead><tbody>"
                   + "".join(f"<tr><td>{b['low']:.1f}–{b['high']:.1f}</td><td class=\"num\">{b['count']}</td>"
                             f"<td class=\"num\">{fmt(b['mean_predicted'])}</td>"
                             f"<td class=\"num\">{fmt(b['observed_rate'])}</td></tr>" for b in section["bins"])
                   + "</tbody></table>")
        probabilities, labels = labelled_probabilities(samples, metrics)
        title = f"n={section['n']}" + (f", AUROC {section['auroc']:.3f}" if section.get("auroc") is not None else "")
        out.append("<div class=\"plots\" id=\"plot-calibration\">" + plots.calibration(
            section["bins"], probabilities, labels, threshold=section["threshold"], title=title) + "</div>")
    return "".join(out)


def run_html(results: dict[str, Any], samples: list[dict[str, Any]]) -> str:
    metrics = results["metrics"]
    judge = results.get("judge")
    ts = results["testset"]
    out = [f"<h1>rag eval: {esc(results['name'])}</h1>",
           f"<p class=\"muted\">created {esc(results['created'])} · test set {esc(ts['source'])} "
           f"({ts['questions']} questions) · collection {esc(results['collection'])}</p>"]
    if judge and judge.get("caveat"):
        out.append(f"<div class=\"caveat\" id=\"judge-caveat\"><b>Smoke-test scores only.</b> {esc(judge['caveat'])}</div>")
    for note in results.get("notes", []):
        out.append(f"<div class=\"note\">{esc(note)}</div>")
    if note := small_n_note(results["summary"]):
        out.append(f"<div class=\"note\" id=\"small-n\">{esc(note)}</div>")
    if results.get("generation_errors"):
        out.append(f"<div class=\"note err\">{results['generation_errors']} question(s) got no answer: generation failed.</div>")
    out.append(f"<h2>Summary</h2><table id=\"summary\"><thead><tr><th>metric</th><th>mean</th>"
               f"<th>{int(results['confidence'] * 100)}% CI (bootstrap)</th><th>scored</th><th>missing</th></tr></thead><tbody>")
    for name, s in results["summary"].items():
        reasons = "; ".join(f"{r} ({c})" for r, c in s["missing_reasons"].items())
        out.append(f"<tr><td>{esc(name)}</td><td class=\"num\">{fmt(s['mean'])}</td><td class=\"num\">{esc(_ci(s))}</td>"
                   f"<td class=\"num\">{s['n']}</td><td>{s['missing']}{(': ' + esc(reasons)) if reasons else ''}</td></tr>")
    out.append("</tbody></table>")
    timing = results["timing"]
    out.append(f"<p class=\"muted\" id=\"timing\">{esc(answering_text(timing))} · judging {timing['judge_seconds']:.1f} s "
               f"({timing['judge_seconds_per_question'] or 0:.1f} s per question) · total {timing['total_seconds']:.1f} s</p>")
    distributions = {m: [s["scores"][m]["value"] for s in samples if s["scores"][m]["value"] is not None] for m in metrics}
    out.append("<h2>Distributions</h2><div class=\"plots\" id=\"plot-metrics\">" + plots.metric_distributions(distributions) + "</div>")
    out.append("<h2>Latency per stage</h2><div class=\"plots\" id=\"plot-latency\">" + plots.latency(latency_series(samples)) + "</div>")
    out.append("<table><thead><tr><th>stage</th><th>mean ms</th><th>p50 ms</th><th>p95 ms</th></tr></thead><tbody>"
               + "".join(f"<tr><td>{esc(k)}</td><td class=\"num\">{v['mean_ms']:.1f}</td><td class=\"num\">{v['p50_ms']:.1f}</td>"
                         f"<td class=\"num\">{v['p95_ms']:.1f}</td></tr>" for k, v in results["latency"].items())
               + "</tbody></table>")
    if section := results.get("calibration"):
        out.append(_calibration_html(section, samples, metrics))
    shown = _has_answerable(samples)
    headers = ["id", "question", "answer", *metrics, *(["answerable"] if shown else []), "ms"]
    # Metric names break after an underscore, so seven metric columns fit a 1280-px window; the judge's
    # reasons and the contexts get a full-width row under each question instead of a squeezed column.
    out.append("<h2>Questions</h2><p class=\"muted\">Click a column header to sort; the row under each question "
               "holds the judge's reasons and the retrieved contexts.</p>"
               "<table class=\"sortable\" id=\"questions\"><thead><tr>"
               + "".join(f"<th class=\"sortable\" data-col=\"{i}\">{_header(h)}</th>"
                         for i, h in enumerate(headers)) + "</tr></thead><tbody>")
    for sample in samples:
        answer = (f"<span class=\"err\">generation failed: {esc(sample['error'])}</span>" if sample.get("error")
                  else esc(sample.get("answer") if sample.get("answer") is not None else "(retrieval only)"))
        total = (sample.get("timings") or {}).get("total_ms")
        cells = [f"<td data-sort=\"{esc(sample['id'])}\">{esc(sample['id'])}</td>",
                 f"<td data-sort=\"{esc(sample['question'])}\" class=\"question\">{esc(sample['question'])}"
                 + (f"<br><small class=\"muted\">reference: {esc(sample['reference'])}</small>" if sample.get("reference") else "")
                 + "</td>",
                 f"<td class=\"answer\" data-sort=\"{esc(sample.get('answer') or '')}\">{answer}</td>",
                 *(_score_cell(sample["scores"][m]) for m in metrics),
                 *([_probability_cell(_answerable(sample))] if shown else []),
                 f"<td class=\"num\" data-sort=\"{total or 0:.3f}\">{(total or 0):.0f}</td>"]
        out.append(f"<tr data-id=\"{esc(sample['id'])}\">" + "".join(cells) + "</tr>")
        out.append(f"<tr class=\"detail\" data-for=\"{esc(sample['id'])}\"><td colspan=\"{len(headers)}\"><details>"
                   f"<summary>judge's reasons and {len(sample.get('contexts') or [])} retrieved contexts</summary>"
                   f"<div class=\"reasons\">{_reasons(sample)}</div><h4>Retrieved contexts</h4>{_contexts(sample)}"
                   "</details></td></tr>")
    out.append("</tbody></table>")
    out.append("<h2>Judge</h2>")
    if judge:
        out.append(_kv_table([("model", judge["model"]), ("endpoint", judge["base_url"]),
                              ("embedded", judge["embedded"]), ("RAGAS", judge["ragas"]),
                              ("embeddings", judge["embeddings"]), ("max_tokens", judge["max_tokens"]),
                              ("temperature", judge["temperature"]), ("timeout per request (s)", judge["timeout_s"]),
                              ("retries", judge["max_retries"]), ("concurrency", judge["concurrency"]),
                              ("JSON schema enforced", judge["json_schema"]), ("cache", judge["cache"]),
                              ("calls sent / from cache / failed",
                               f"{judge['calls'].get('sent', 0)} / {judge['calls'].get('cached', 0)} / {judge['calls'].get('failed', 0)}")]))
    else:
        out.append("<p class=\"muted\">no judge metric in this run</p>")
    out.append("<h2>Test set</h2>" + _kv_table([("source", ts["source"]), ("format", ts["format"]),
                                               ("questions", ts["questions"]), ("sha256", ts["sha256"])]))
    out.append("<h2>Configuration</h2>" + _kv_table([("collection", results["collection"]),
                                                     ("overrides", json.dumps(results["overrides"], sort_keys=True))])
               + f"<details><summary>all settings</summary><pre>{esc(json.dumps(results['config'], indent=2, sort_keys=True))}</pre></details>")
    out.append("<h2>Versions</h2>" + _kv_table(list(results["versions"].items())))
    return page(f"rag eval: {results['name']}", "\n".join(out))
