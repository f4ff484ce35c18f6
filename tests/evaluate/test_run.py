"""A run folder's fingerprint (what may be resumed) and the settings its answers are made with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rag.core.errors import ConfigError


def test_result_neutral_settings_do_not_block_resuming(tmp_path: Path) -> None:
    """Threads, timeouts and retries change how fast answers come, not what they are: a run that timed out
    resumes with other values; a setting that shapes answers is still refused."""
    from rag.core.settings import Settings
    from rag.evaluate.metrics import MetricSpec
    from rag.evaluate.run import RunSpec, _prepare_folder
    from rag.evaluate.testset import load_testset

    testset = load_testset("docs_qa").limited(2)

    def spec(**llm: Any) -> RunSpec:
        settings = Settings().model_copy(update={"llm": Settings().llm.model_copy(update=llm)})
        return RunSpec(testset=testset, out=tmp_path / "run", settings=settings, metrics=[MetricSpec("mrr@10", "retrieval", 10)])

    base = spec(threads=2)
    _prepare_folder(base)
    resumed = spec(threads=1, timeout=900.0, max_retries=0)
    assert resumed.fingerprint() == base.fingerprint()
    _prepare_folder(resumed)
    with pytest.raises(ConfigError, match="holds a run with other settings"):
        _prepare_folder(spec(temperature=0.7))
    # A folder stamped by an earlier version (threads and timeouts in the fingerprint) still resumes.
    (tmp_path / "run" / "checkpoint" / "run.json").write_text(json.dumps({"fingerprint": base.fingerprint(legacy=True)}))
    _prepare_folder(base)


def test_an_embedded_answering_llm_is_asked_without_the_prompt_cache() -> None:
    from rag.core.settings import Settings
    from rag.evaluate.run import _answering_settings

    embedded = _answering_settings(Settings())
    assert embedded.llm.extra_body == {"cache_prompt": False, "seed": 0}
    own = Settings().model_copy(update={"llm": Settings().llm.model_copy(update={"extra_body": {"seed": 7}})})
    assert _answering_settings(own).llm.extra_body == {"cache_prompt": False, "seed": 7}  # the user's value wins
    endpoint = Settings().model_copy(update={"llm": Settings().llm.model_copy(update={"base_url": "http://x/v1"})})
    assert _answering_settings(endpoint).llm.extra_body == {}
