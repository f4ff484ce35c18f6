"""rag.testing.stores as a plugin author uses it: a test module outside this repository's tests, with no
conftest.py, subclasses the contract mixins and pytest runs every case."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN_TESTS = '''
from rag.stores.faiss_store import FaissStore
from rag.testing.stores import VectorStoreContract


class TestPluginStore(VectorStoreContract):
    def open_at(self, location, dimension):
        return FaissStore(location, dimension, index="flat")
'''


def test_the_contract_suite_runs_standalone(tmp_path: Path) -> None:
    """The mixin brings its own data fixtures (corpus, queries, filters): nothing from tests/ is needed."""
    (tmp_path / "test_plugin_store.py").write_text(textwrap.dedent(PLUGIN_TESTS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         str(tmp_path / "test_plugin_store.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "failed" not in summary and "error" not in summary, summary
    assert int(summary.split(" passed")[0].split()[-1]) >= 40  # every case, each filter of FILTER_SPECS
