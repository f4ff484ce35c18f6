"""One query's options: the value every front end builds once and the engine resolves in one place.

A search or an answer takes about a dozen per-query options (how many hits, the dense weight, the
fusion, filters, the LLM stages, the conversation so far). They live here, once, as the frozen
:class:`QueryOptions`: the CLI builds one from its flags, the REST API derives its request schema from
its fields (:mod:`rag.api.schemas`), ``rag eval`` carries one per run, and
:meth:`rag.engine.RagEngine.retrieve` resolves it against the settings with :meth:`QueryOptions.resolve`::

    from rag.core.query import QueryOptions

    options = QueryOptions(k=10, alpha=0.8, filter="lang=en")
    hits = engine.search("refund policy", options=options)
    wider = dataclasses.replace(options, k=50)  # a new value; ``options`` is unchanged

Every option is ``None`` by default, meaning "the configured default" (``[retrieval]`` and ``[rerank]``
in ``rag.toml``); bad values fail at construction with a :class:`~rag.core.errors.ConfigError` that
names the value. Each field's help text, bounds and setting are stated once, in its
:func:`query_option` metadata, and the front ends read them from :data:`OPTIONS`.

To add an option: add the field here (with its help, bounds and setting) and to :class:`ResolvedQuery`,
use it where the engine consumes the resolved query, and add its row to the docs (see
docs/architecture.md, "How to add a query option").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from numbers import Integral, Real
from typing import Any, Literal, get_args

from rag.core.errors import ConfigError
from rag.core.filters import Filter, parse_filter
from rag.core.settings import Settings

Fusion = Literal["linear", "rrf"]
"""How the dense and keyword lists are merged: a score blend (``linear``) or reciprocal rank (``rrf``)."""

FilterSpec = Filter | Mapping[str, Any] | str | Sequence[str] | None
"""What a filter may be given as: a :class:`~rag.core.filters.Filter`, its mapping form, CLI strings."""

Turns = Sequence[Mapping[str, Any]]
"""Earlier turns of a conversation, ``{"role", "content"}``, oldest first."""

MULTI_QUERY_MAX = 10
"""The most LLM-written query variants one search may ask for (as ``retrieval.multi_query`` allows)."""


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """What the front ends need to know about one option: its help text, bounds and configured default.

    Attributes:
        help: one sentence for ``--help``, the OpenAPI description and the docs.
        setting: the dotted settings field that supplies the default (``"retrieval.k"``); ``None``
            when unset means "none" (no filter, no score floor).
        minimum / maximum: inclusive bounds of a number, checked at construction.
        exclusive_minimum: ``minimum`` itself is refused too (``k > 0``).
        choices: the allowed values of a text option.
    """

    help: str
    setting: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] = ()

    def default_in(self, settings: Settings) -> Any:
        """The configured default in ``settings`` (``None`` when the option has no setting)."""
        if self.setting is None:
            return None
        value: Any = settings
        for name in self.setting.split("."):
            value = getattr(value, name)
        return value


def query_option(help_text: str, **spec: Any) -> Any:
    """A :class:`QueryOptions` field: ``None`` by default, with its :class:`OptionSpec` as metadata."""
    return field(default=None, metadata={"option": OptionSpec(help_text, **spec)})


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryOptions:
    """The per-query options of a search or an answer; ``None`` means "use the configured default".

    Frozen: derive variants with :func:`dataclasses.replace`, which validates again. The filter is kept
    parsed (a :class:`~rag.core.filters.Filter`, or ``None`` for none) and the history as validated
    ``{"role", "content"}`` turns without system turns, so two equal requests give equal values.

    Raises:
        ConfigError: a value out of range or of the wrong kind (the message names it), a malformed
            filter (:class:`~rag.core.errors.FilterError`) or history turn.
    """

    k: int | None = query_option("Number of hits to return.", setting="retrieval.k", minimum=0, exclusive_minimum=True)
    alpha: float | None = query_option(
        "Dense weight in [0, 1]: 1 = dense only, 0 = BM25 only.", setting="retrieval.alpha", minimum=0, maximum=1
    )
    fusion: Fusion | None = query_option(
        "linear (score blend) or rrf (reciprocal rank).", setting="retrieval.fusion", choices=get_args(Fusion)
    )
    filter: FilterSpec = query_option(
        "Pre-filter, applied inside both searches: 'lang=en', 'page>=2', 'tags in a,b', 'source~docs/*.md', "
        "'modified>=2026-01-01' or JSON (operators eq, ne, in, nin, gt, gte, lt, lte, glob)."
    )
    min_score: float | None = query_option("Post-filter: drop hits whose fused score is below this.")
    max_per_doc: int | None = query_option(
        "Post-filter: at most N chunks per document.", minimum=0, exclusive_minimum=True
    )
    hyde: bool | None = query_option(
        "HyDE: the dense side searches with an LLM-written answer passage.", setting="retrieval.hyde"
    )
    rewrite: bool | None = query_option(
        "Let the LLM rewrite the question into a keyword search query.", setting="retrieval.rewrite"
    )
    multi_query: int | None = query_option(
        "Also search N LLM-written query variants, merged by reciprocal rank.",
        setting="retrieval.multi_query", minimum=0, maximum=MULTI_QUERY_MAX,
    )
    rerank: bool | str | None = query_option(
        "Rerank the top candidates: true for the configured model (rerank.model), a model id or folder, "
        "'llm' for the configured LLM, false for none.",
        setting="rerank.enabled",
    )
    history: Turns | None = query_option(
        "Earlier turns, oldest first: the question is a follow-up, made standalone before retrieval."
    )

    def __post_init__(self) -> None:
        for name, spec in OPTIONS.items():
            _check(name, getattr(self, name), spec)
        # Stored normalised (frozen, hence object.__setattr__): equal requests are equal values.
        parsed = parse_filter(self.filter)
        object.__setattr__(self, "filter", parsed if parsed else None)
        if self.history is not None:
            object.__setattr__(self, "history", tuple(validate_history(self.history)))

    def updated(self, values: Mapping[str, Any], *, source: str = "query options") -> QueryOptions:
        """A copy with ``values`` (option name -> value) set, as :func:`dataclasses.replace` makes it.

        For options that arrive by name from text (``rag eval --set query.alpha=0.3``), where a
        misspelt name must be an error that says which names exist.

        Raises:
            ConfigError: a name is not an option (``source`` says where it came from), or a value is bad.
        """
        unknown = sorted(set(values) - set(OPTIONS))
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ConfigError(f"unknown query option {names} in {source}; the options are {', '.join(OPTIONS)}")
        return replace(self, **values)

    def given(self) -> dict[str, Any]:
        """The options set on this value (not ``None``), by field name."""
        return {name: getattr(self, name) for name in OPTIONS if getattr(self, name) is not None}

    def resolve(self, settings: Settings) -> ResolvedQuery:
        """The concrete values of this query: each unset option takes its default from ``settings``.

        This is the one place where per-query options meet the configuration; the stage knobs that
        are settings only (``retrieval.hyde_weight``, ``rerank.top_n``, ...) are carried along so the
        engine reads one value.
        """
        chosen = {
            name: spec.default_in(settings) if (value := getattr(self, name)) is None else value
            for name, spec in OPTIONS.items()
        }
        chosen["filter"] = chosen["filter"] or Filter()  # no filter: the empty one, which matches everything
        chosen["history"] = list(chosen["history"] or ())
        retrieval, rerank = settings.retrieval, settings.rerank
        return ResolvedQuery(
            **chosen, hyde_weight=retrieval.hyde_weight, condense=retrieval.condense, rerank_top_n=rerank.top_n,
            rerank_score=rerank.score, rerank_blend_weight=rerank.blend_weight,
        )


@dataclass(frozen=True, slots=True)
class ResolvedQuery:
    """A query's options with every default filled in from the settings: what the engine runs.

    The first group mirrors :class:`QueryOptions`; ``filter`` is the empty filter for none and
    ``min_score`` / ``max_per_doc`` stay ``None`` for none. ``rerank`` is ``False`` for none, ``True``
    for ``rerank.model``, or a model name. The second group are settings-only stage knobs.
    """

    k: int
    alpha: float
    fusion: Fusion
    filter: Filter
    min_score: float | None
    max_per_doc: int | None
    hyde: bool
    rewrite: bool
    multi_query: int
    rerank: bool | str
    history: list[dict[str, str]]
    hyde_weight: float
    condense: bool
    rerank_top_n: int
    rerank_score: Literal["rerank", "blend"]
    rerank_blend_weight: float


OPTIONS: dict[str, OptionSpec] = {f.name: f.metadata["option"] for f in fields(QueryOptions)}
"""Each option's :class:`OptionSpec`, in field order: where the CLI, the API and the docs read help and bounds."""


def option_help(name: str) -> str:
    """The help text of option ``name`` with its shipped default and the setting that changes it, for
    ``--help`` and OpenAPI (``"Number of hits to return. [default: 5, from retrieval.k]"``)."""
    spec = OPTIONS[name]
    if spec.setting is None:
        return spec.help
    return f"{spec.help} [default: {_shipped_default(spec.setting)}, from {spec.setting}]"


def _shipped_default(setting: str) -> str:
    """The built-in value of a dotted setting (``rag.toml`` and ``RAG_*`` may change it), as help text shows it."""
    group, _, field_name = setting.partition(".")
    value = Settings.model_fields[group].default.model_fields[field_name].default
    return str(value).lower() if isinstance(value, bool) else str(value)


def query_options(options: QueryOptions | None = None, **keywords: Any) -> QueryOptions:
    """``options``, or a :class:`QueryOptions` built from the keyword arguments of the engine's methods.

    The keyword arguments are a convenience over ``options``; giving both would leave one of them
    silently ignored, so it is refused.

    Raises:
        ConfigError: ``options`` and a keyword option were both given, or a value is invalid.
    """
    given = sorted(name for name, value in keywords.items() if value is not None)
    if options is None:
        return QueryOptions(**keywords)
    if given:
        raise ConfigError(
            f"give the query options either as options=QueryOptions(...) or as keyword arguments, not both "
            f"(got options and {', '.join(given)})"
        )
    if not isinstance(options, QueryOptions):
        raise ConfigError(f"options must be a QueryOptions, got {type(options).__name__}")
    return options


def validate_history(history: Turns | None) -> list[dict[str, str]]:
    """Earlier turns as ``{"role", "content"}`` dicts of user/assistant text (system turns are dropped).

    Raises:
        ConfigError: a turn is not an object with a known role and text content.
    """
    turns: list[dict[str, str]] = []
    if isinstance(history, (str, bytes, Mapping)):  # a sequence, but not of turns
        raise ConfigError(f"history must be a list of {{role, content}} turns, got {type(history).__name__}")
    for number, turn in enumerate(history or [], start=1):
        if not isinstance(turn, Mapping) or not isinstance(turn.get("content"), str):
            raise ConfigError(f"history turn {number}: expected an object with 'role' and text 'content'")
        role = turn.get("role")
        if role not in ("user", "assistant", "system"):
            raise ConfigError(f"history turn {number}: role must be user, assistant or system, got {role!r}")
        if role != "system":
            turns.append({"role": str(role), "content": str(turn["content"])})
    return turns


def _check(name: str, value: Any, spec: OptionSpec) -> None:
    """Refuse ``value`` for option ``name`` if it breaks its type or ``spec``'s choices or bounds, naming both."""
    if value is None:
        return
    if spec.choices:
        if value not in spec.choices:
            raise ConfigError(f"unknown {name} {value!r}; use {' or '.join(repr(c) for c in spec.choices)}")
        return
    kinds = _KINDS.get(name)
    if kinds is None:  # a structured option (filter, history): its own parser checks it
        return
    stray_bool = isinstance(value, bool) and "bool" not in kinds  # bool is an Integral to Python
    if stray_bool or not isinstance(value, tuple(_TYPES[kind] for kind in kinds)):
        raise ConfigError(f"{name} must be {' or '.join(_KIND_WORDS[kind] for kind in kinds)}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, Real):
        return
    low, high = spec.minimum, spec.maximum
    below = low is not None and (value <= low if spec.exclusive_minimum else value < low)
    if math.isnan(value) or below or (high is not None and value > high):
        raise ConfigError(f"{name} must be {_bounds(spec)}, got {value}")


def _bounds(spec: OptionSpec) -> str:
    """The allowed range in words, as the engine's messages have always put it."""
    if spec.minimum is None and spec.maximum is None:
        return "a number"
    if spec.exclusive_minimum and spec.minimum == 0 and spec.maximum is None:
        return "positive"
    if spec.maximum is None:
        return f"{_number(spec.minimum)} or more"
    if spec.minimum is None:
        return f"{_number(spec.maximum)} or less"
    return f"within [{_number(spec.minimum)}, {_number(spec.maximum)}]"


def _number(bound: float | None) -> str:
    return str(int(bound)) if bound is not None and float(bound).is_integer() else str(bound)


# The plain types an option may be declared with (``int | None`` ...), checked at construction; bool is
# an Integral to Python, so it is told apart. Other annotations (a filter, turns) have their own parser.
_TYPES: dict[str, type | tuple[type, ...]] = {"int": Integral, "float": Real, "bool": bool, "str": str}
_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a name"}


def _kinds(annotation: str) -> tuple[str, ...] | None:
    """``"bool | str | None"`` -> ``("bool", "str")``; ``None`` when a part is not a plain type."""
    parts = tuple(part.strip() for part in str(annotation).split("|") if part.strip() != "None")
    return parts if all(part in _TYPES for part in parts) else None


_KINDS = {f.name: kinds for f in fields(QueryOptions) if (kinds := _kinds(f.type)) is not None}
