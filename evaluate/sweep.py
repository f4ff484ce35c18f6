"""Sweeps: one run per combination of setting values, then one comparison of all of them.

``--grid retrieval.alpha=0,0.5,1 --grid retrieval.k=3,5`` makes six runs, in ``<out>/runs/run-01`` ...
(each resumable like any run), judged by one shared judge, and compares them with the first combination
as the baseline in ``<out>/report.html``. Only query-time settings can be swept over one index: a setting
that shapes the index (chunking, embedding model, store) is refused by the engine with a rebuild hint.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.core.errors import ConfigError
from rag.core.settings import put_dotted
from rag.evaluate.compare import compare_runs, write_comparison
from rag.evaluate.judge import Judge
from rag.evaluate.run import Progress, RunResult, RunSpec, run_eval


def parse_grid(items: list[str]) -> list[tuple[str, list[Any]]]:
    """``["retrieval.alpha=0,0.5,1"]`` -> ``[("retrieval.alpha", [0, 0.5, 1])]``.

    Values are read as JSON where they parse (numbers, booleans, ``null``), else kept as text; a value
    list may also be given as a JSON array (``retrieval.fusion=["linear","rrf"]``).

    Raises:
        ConfigError: a malformed item, an empty value list, or the same key twice.
    """
    grid: list[tuple[str, list[Any]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or "." not in key or not raw.strip():
            raise ConfigError(f"--grid expects SECTION.FIELD=V1,V2,..., got {item!r}")
        if any(existing == key for existing, _ in grid):
            raise ConfigError(f"--grid names {key} twice")
        values: list[Any]
        if raw.strip().startswith("["):
            try:
                values = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(f"--grid {key}: invalid JSON list ({exc})") from None
        else:
            values = []
            for part in raw.split(","):
                part = part.strip()
                if not part:
                    raise ConfigError(f"--grid {key}: empty value in {raw!r}")
                try:
                    values.append(json.loads(part))
                except ValueError:
                    values.append(part)
        if not values:
            raise ConfigError(f"--grid {key}: no values")
        grid.append((key, values))
    if not grid:
        raise ConfigError("sweep needs at least one --grid SECTION.FIELD=V1,V2,...")
    return grid


def combinations(grid: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination as ``{"retrieval.alpha": 0.5, ...}``, in grid order."""
    keys = [key for key, _ in grid]
    return [dict(zip(keys, values)) for values in itertools.product(*(values for _, values in grid))]


def nested(flat: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"retrieval.alpha": 0.5}`` merged into a copy of ``base`` as ``{"retrieval": {"alpha": 0.5}}``."""
    merged = copy.deepcopy(base or {})
    for key, value in flat.items():
        put_dotted(merged, key, value, f"--grid {key} conflicts with --set")
    return merged


def label(combination: dict[str, Any]) -> str:
    return " ".join(f"{key}={json.dumps(value)}" for key, value in combination.items())


@dataclass(slots=True)
class SweepResult:
    runs: list[RunResult]
    comparison: dict[str, Any]


def run_sweep(
    out: Path,
    grid: list[tuple[str, list[Any]]],
    make_spec: Callable[[dict[str, Any], Path, str], RunSpec],
    *,
    on_run: Callable[[int, int, str], None] | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Run every combination and compare them.

    Args:
        out: the sweep folder; runs go to ``out/runs/run-NN``, the comparison to ``out`` itself.
        grid: from :func:`parse_grid`.
        make_spec: ``(nested overrides of the combination, run folder, label) -> RunSpec``; it applies
            the combination on top of the base overrides and validates the settings.
        on_run: called as ``(number, total, label)`` before each run.
        progress: passed to each run.
    """
    combos = combinations(grid)
    specs = [make_spec(nested(combo), Path(out) / "runs" / f"run-{number:02d}", label(combo))
             for number, combo in enumerate(combos, start=1)]  # every combination validated before the first run
    results: list[RunResult] = []
    with ExitStack() as stack:
        judge = None
        if any(spec.judge_metrics for spec in specs):
            judge = stack.enter_context(Judge(specs[0].judge))
            if not judge.config.embedded:
                judge.check_reachable()  # before the first answer, not after the first run
        for number, spec in enumerate(specs, start=1):
            if on_run:
                on_run(number, len(specs), spec.name or "")
            results.append(run_eval(spec, judge=judge, progress=progress))
    comparison = compare_runs([r.out for r in results], names=[spec.name or "" for spec in specs])
    comparison["grid"] = [{"key": key, "values": values} for key, values in grid]
    write_comparison(out, comparison)
    return SweepResult(results, comparison)
