"""Neighbouring context: widen retrieved chunks before the answer is written (``generation.expand``).

A chunk is the unit of retrieval, but the sentence that names its subject often sits just before it. With
``neighbours`` each hit handed to the generator is widened with the chunk before and the chunk after it in
the same document and section; with ``section``, with its whole section when the section fits the budget
(else with its neighbours, as ``neighbours`` does). The widened text goes in :attr:`Hit.expanded_text
<rag.core.types.Hit.expanded_text>`, which the prompt builder and the extractive generator read through
:attr:`Hit.context_text <rag.core.types.Hit.context_text>`; the hit's chunk, and so every citation, is the
retrieved one.

Rules that keep the context honest and bounded:

* **Budget.** Widening never pushes a retrieved hit out of the prompt: the hits' own blocks are counted
  first, as the prompt builder packs them into ``llm.context_tokens``, and only the tokens left over are
  spent on widening, best hit first. A neighbour that does not fit is not added (and widening stops on
  that side, so the text stays contiguous).
* **No repeats.** Consecutive windows share up to ``chunking.overlap`` tokens; they are merged through
  their character offsets in the document, so the shared text appears once. A neighbour that is itself
  among the hits, or already widens a better hit, is not added again.
* **Same section.** Neighbours come from the same document, section heading path and page only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal, Protocol, get_args

from rag.core.types import Chunk, Hit
from rag.generate.prompt import format_block

ExpandMode = Literal["none", "neighbours", "section"]
EXPAND_MODES: tuple[str, ...] = get_args(ExpandMode)

#: How many chunks on each side of a hit ``section`` looks at: a section longer than that is not short.
SECTION_REACH = 16


class ChunkSource(Protocol):
    """Where neighbours are read from (the catalog)."""

    def chunk_range(self, doc_id: str, first: int, last: int) -> list[Chunk]: ...


def expand_hits(
    hits: Sequence[Hit],
    catalog: ChunkSource,
    mode: ExpandMode,
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
) -> list[Hit]:
    """The hits to answer from, each widened as ``mode`` says within ``budget_tokens``.

    Args:
        hits: retrieved hits, best first (not modified).
        catalog: reads a document's chunks by position.
        mode: ``none`` (the hits as they are), ``neighbours`` or ``section``.
        budget_tokens: the prompt's context budget (``llm.context_tokens``), in ``count_tokens`` units.
        count_tokens: the prompt builder's token counter.

    Returns:
        New :class:`Hit` objects in the same order; a widened one has ``expanded_text`` set.
    """
    if mode == "none" or not hits:
        return list(hits)
    # What the prompt builder will pack: greedily in rank order, the first always.
    spare = budget_tokens
    packed: list[int] = []
    for index, hit in enumerate(hits):
        cost = count_tokens(format_block(len(packed) + 1, hit))
        if cost <= spare or not packed:
            packed.append(index)
            spare -= cost
    spare = max(spare, 0)
    taken = {hit.chunk.chunk_id for hit in hits}  # text already in the prompt, or given to a better hit
    out = list(hits)
    for number, index in enumerate(packed, start=1):
        if spare <= 0:
            break
        hit = hits[index]
        base = count_tokens(format_block(number, hit))
        run, whole = _section_run(hit.chunk, catalog, 1 if mode == "neighbours" else SECTION_REACH)
        position = next(i for i, chunk in enumerate(run) if chunk.chunk_id == hit.chunk.chunk_id)
        chosen: list[Chunk] | None = None
        others = [chunk for chunk in run if chunk.chunk_id != hit.chunk.chunk_id]
        free = bool(others) and not any(chunk.chunk_id in taken for chunk in others)
        if mode == "section" and whole and free and count_tokens(format_block(number, hit, merge_chunks(run))) - base <= spare:
            chosen = run
        if chosen is None:  # neighbours: the one before first (it often names the subject), then the one after
            near = run[max(0, position - 1) : position + 2]
            centre = position - max(0, position - 1)
            chosen = [hit.chunk]
            for side in (-1, 1):
                neighbour = centre + side
                if not 0 <= neighbour < len(near) or near[neighbour].chunk_id in taken:
                    continue
                trial = [near[neighbour], *chosen] if side < 0 else [*chosen, near[neighbour]]
                cost = count_tokens(format_block(number, hit, merge_chunks(trial))) - base
                if cost <= spare:
                    chosen = trial
        if len(chosen) == 1:
            continue
        text = merge_chunks(chosen)
        spare -= count_tokens(format_block(number, hit, text)) - base
        taken.update(chunk.chunk_id for chunk in chosen)
        out[index] = replace(hit, expanded_text=text)
    return out


def _section_run(chunk: Chunk, catalog: ChunkSource, reach: int) -> tuple[list[Chunk], bool]:
    """The chunks around ``chunk`` (at most ``reach`` each side) in its document, section and page, in
    order, and whether that is the whole section (it ends before ``reach`` on both sides)."""
    meta = chunk.metadata
    index = meta.get("chunk_index")
    if not isinstance(index, int):
        return [chunk], False
    around = catalog.chunk_range(chunk.doc_id, max(0, index - reach - 1), index + reach + 1)
    position = next((i for i, c in enumerate(around) if c.chunk_id == chunk.chunk_id), None)
    if position is None:  # the catalog moved on since the search
        return [chunk], False

    def same_place(other: Chunk) -> bool:
        return all(other.metadata.get(key) == meta.get(key) for key in ("section", "page"))

    first, last = position, position
    while first > 0 and same_place(around[first - 1]):
        first -= 1
    while last + 1 < len(around) and same_place(around[last + 1]):
        last += 1
    # A run that reaches the extra chunk read on a side may go on beyond it: not the whole section.
    whole = position - first <= reach and last - position <= reach
    first, last = max(first, position - reach), min(last, position + reach)
    return around[first : last + 1], whole


def merge_chunks(chunks: Sequence[Chunk]) -> str:
    """The text of consecutive chunks of one document, each shared overlap once.

    Offsets say where a chunk lies in the document text (``start``/``end``), and a chunk's text ends with
    ``document[start:end]`` (a table window after the first starts with the repeated header, which is
    dropped here). A chunk that starts before the previous one ends overlaps it by that many characters,
    which are skipped; one that starts after it follows a gap (white space the chunker trimmed) and is
    joined with a blank line, or a space for a one-character gap. Should the offsets not match the text
    (a chunk from another version of the document), the longest suffix of the text so far that starts the
    next chunk is taken as the overlap instead.
    """
    if not chunks:
        return ""
    text = chunks[0].text
    previous = chunks[0]
    for chunk in chunks[1:]:
        body = _body(chunk)
        start, end = chunk.metadata.get("start"), previous.metadata.get("end")
        if isinstance(start, int) and isinstance(end, int) and body is not None:
            if start < end:
                shared = end - start
                if shared <= len(body) and text.endswith(body[:shared]):
                    text += body[shared:]
                else:
                    text += body[_overlap(text, body) :]
            else:
                text += (" " if start - end == 1 else "\n\n") + body
        else:
            body = chunk.text
            shared = _overlap(text, body)
            text += body[shared:] if shared else "\n\n" + body
        previous = chunk
    return text


def _body(chunk: Chunk) -> str | None:
    """The part of a chunk's text that is ``document[start:end]`` (all of it but a table's repeated header)."""
    start, end = chunk.metadata.get("start"), chunk.metadata.get("end")
    if not (isinstance(start, int) and isinstance(end, int)) or end - start > len(chunk.text):
        return None
    return chunk.text[len(chunk.text) - (end - start) :]


def _overlap(text: str, following: str) -> int:
    """Length of the longest suffix of ``text`` that ``following`` starts with."""
    for size in range(min(len(text), len(following)), 0, -1):
        if text.endswith(following[:size]):
            return size
    return 0


__all__ = ["EXPAND_MODES", "SECTION_REACH", "ExpandMode", "expand_hits", "merge_chunks"]
