"""QueryOptions: one value for a query's options, validated when built, resolved against settings in one place."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from rag.core.errors import ConfigError, FilterError
from rag.core.filters import Filter, parse_filter
from rag.core.query import OPTIONS, QueryOptions, ResolvedQuery, option_help, query_options
from rag.core.settings import RetrievalSettings, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no rag.toml
    for name in list(os.environ):
        if name.startswith("RAG_"):
            monkeypatch.delenv(name)


def configured() -> Settings:
    """Settings whose every query default differs from the shipped one, so a resolved value shows its source."""
    return load_settings(
        retrieval={"k": 7, "alpha": 0.2, "fusion": "rrf", "hyde": True, "rewrite": True, "multi_query": 2,
                   "hyde_weight": 0.4, "condense": False},
        rerank={"enabled": True, "model": "llm", "top_n": 9, "score": "blend", "blend_weight": 0.6},
    )


def test_unset_options_resolve_to_the_configured_defaults() -> None:
    resolved = QueryOptions().resolve(configured())
    assert resolved == ResolvedQuery(
        k=7, alpha=0.2, fusion="rrf", filter=Filter(), min_score=None, max_per_doc=None, hyde=True, rewrite=True,
        multi_query=2, rerank=True, history=[], hyde_weight=0.4, condense=False, rerank_top_n=9,
        rerank_score="blend", rerank_blend_weight=0.6,
    )


def test_shipped_defaults_resolve_to_a_plain_hybrid_search() -> None:
    resolved = QueryOptions().resolve(load_settings())
    assert (resolved.k, resolved.alpha, resolved.fusion, resolved.hyde, resolved.rewrite) == (5, 0.5, "linear", False, False)
    assert (resolved.multi_query, resolved.rerank, resolved.min_score, resolved.max_per_doc) == (0, False, None, None)


def test_given_options_win_over_the_settings() -> None:
    options = QueryOptions(
        k=3, alpha=1.0, fusion="linear", filter="lang=en", min_score=0.25, max_per_doc=2, hyde=False, rewrite=False,
        multi_query=0, rerank=False, history=[{"role": "user", "content": "hi"}],
    )
    resolved = options.resolve(configured())
    assert (resolved.k, resolved.alpha, resolved.fusion, resolved.min_score, resolved.max_per_doc) == (3, 1.0, "linear", 0.25, 2)
    assert (resolved.hyde, resolved.rewrite, resolved.multi_query, resolved.rerank) == (False, False, 0, False)
    assert resolved.filter == parse_filter("lang=en") and resolved.history == [{"role": "user", "content": "hi"}]
    assert resolved.rerank_top_n == 9  # settings-only knobs still come from the settings


def test_every_configured_default_is_a_valid_option() -> None:
    """The options' bounds admit what the settings admit: a setting's default passes as an option."""
    settings = load_settings()
    for name, spec in OPTIONS.items():
        if spec.setting is not None:
            QueryOptions(**{name: spec.default_in(settings)})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"k": 0}, "k must be positive, got 0"),
        ({"k": -3}, "k must be positive, got -3"),
        ({"k": "5"}, "k must be an integer, got '5'"),
        ({"k": True}, "k must be an integer, got True"),
        ({"k": 2.5}, "k must be an integer, got 2.5"),
        ({"alpha": 1.5}, r"alpha must be within \[0, 1\], got 1.5"),
        ({"alpha": -0.1}, r"alpha must be within \[0, 1\], got -0.1"),
        ({"alpha": float("nan")}, r"alpha must be within \[0, 1\], got nan"),
        ({"fusion": "max"}, "unknown fusion 'max'; use 'linear' or 'rrf'"),
        ({"max_per_doc": 0}, "max_per_doc must be positive, got 0"),
        ({"multi_query": 11}, r"multi_query must be within \[0, 10\], got 11"),
        ({"multi_query": -1}, r"multi_query must be within \[0, 10\], got -1"),
        ({"min_score": "high"}, "min_score must be a number, got 'high'"),
        ({"hyde": "yes"}, "hyde must be true or false, got 'yes'"),
        ({"rerank": 3}, "rerank must be true or false or a name, got 3"),
        ({"history": [{"role": "robot", "content": "x"}]}, "history turn 1: role must be user, assistant or system"),
        ({"history": "hello"}, "history must be a list of {role, content} turns, got str"),
    ],
)
def test_bad_values_fail_at_construction_naming_the_value(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QueryOptions(**values)


def test_a_bad_filter_fails_at_construction_as_a_filter_error() -> None:
    with pytest.raises(FilterError, match="cannot parse filter"):
        QueryOptions(filter="year between 1 2")


def test_replace_makes_a_validated_variant_and_leaves_the_original() -> None:
    options = QueryOptions(k=5, alpha=0.3)
    wider = dataclasses.replace(options, k=50)
    assert (wider.k, wider.alpha, options.k) == (50, 0.3, 5)
    with pytest.raises(ConfigError, match="alpha must be within"):
        dataclasses.replace(options, alpha=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.k = 1  # type: ignore[misc]


def test_equal_requests_are_equal_values() -> None:
    assert QueryOptions(filter="lang=en") == QueryOptions(filter={"lang": "en"}) == QueryOptions(filter=["lang=en"])
    assert QueryOptions(filter=[]) == QueryOptions() and QueryOptions().filter is None
    with_system = QueryOptions(history=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}])
    assert with_system.history == ({"role": "user", "content": "q"},)


def test_updated_checks_names_for_options_given_as_text() -> None:
    assert QueryOptions(k=3).updated({"alpha": 0.4}, source="--set") == QueryOptions(k=3, alpha=0.4)
    with pytest.raises(ConfigError, match=r"unknown query option 'alhpa' in --set; the options are k, alpha"):
        QueryOptions().updated({"alhpa": 0.4}, source="--set")


def test_keyword_arguments_build_options_but_not_alongside_them() -> None:
    assert query_options(None, k=3, alpha=None) == QueryOptions(k=3)
    given = QueryOptions(alpha=0.9)
    assert query_options(given, k=None, alpha=None) is given
    with pytest.raises(ConfigError, match=r"not both .*got options and alpha, k"):
        query_options(given, k=3, alpha=0.1)
    with pytest.raises(ConfigError, match="options must be a QueryOptions, got dict"):
        query_options({"k": 3})  # type: ignore[arg-type]


def test_help_says_where_the_default_comes_from() -> None:
    assert option_help("k") == f"Number of hits to return. [default: {RetrievalSettings().k}, from retrieval.k]"
    assert option_help("hyde").endswith("[default: false, from retrieval.hyde]")
    assert option_help("min_score") == OPTIONS["min_score"].help  # no setting: unset means none


# -- the API request schema is derived from QueryOptions --------------------------------------------


def test_the_request_schemas_carry_every_option_with_its_bounds_and_help() -> None:
    from rag.api.schemas import AskRequest, SearchRequest

    wire = {"filter": "filters"}
    for model in (SearchRequest, AskRequest):
        for name in OPTIONS:
            if name == "history":  # a request shapes its history itself (AskRequest: a list of turns)
                continue
            field = model.model_fields[wire.get(name, name)]
            assert field.default is None
            assert field.description == option_help(name) or name in ("filter", "rerank")  # wire-specific help
    properties = SearchRequest.model_json_schema()["properties"]
    assert properties["k"]["anyOf"][0] == {"type": "integer", "exclusiveMinimum": 0, "maximum": 1000}
    assert properties["alpha"]["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 1}
    assert properties["multi_query"]["anyOf"][0] == {"type": "integer", "minimum": 0, "maximum": 10}
    assert properties["max_per_doc"]["anyOf"][0] == {"type": "integer", "exclusiveMinimum": 0}
    assert properties["fusion"]["anyOf"][0] == {"type": "string", "enum": ["linear", "rrf"]}


def test_api_request_and_query_options_round_trip() -> None:
    from rag.api.schemas import AskRequest, SearchRequest

    options = QueryOptions(
        k=7, alpha=0.25, fusion="rrf", filter={"lang": "en", "page": {"gte": 2}}, min_score=0.1, max_per_doc=2,
        hyde=True, rewrite=False, multi_query=3, rerank="llm",
    )
    fields = SearchRequest.option_fields(options)
    body = SearchRequest.model_validate_json(json.dumps({"query": "refunds", **fields}))
    assert body.query_options() == options
    assert SearchRequest.option_fields(body.query_options()) == fields
    turns = [{"role": "user", "content": "What does it cost?"}]
    asked = AskRequest.model_validate_json(json.dumps({"question": "and refunds?", "history": turns, **fields}))
    assert asked.query_options(history=[t.model_dump() for t in asked.history]) == dataclasses.replace(options, history=turns)
    assert SearchRequest(query="q").query_options() == QueryOptions()
