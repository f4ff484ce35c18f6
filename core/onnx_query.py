"""A fast, torch-free query encoder: the embedding model's own weights, run by ONNX Runtime.

One short query through MiniLM costs ~15 ms in PyTorch on a laptop-class CPU, mostly per-operator
overhead; ONNX Runtime runs the same graph in ~5 ms. More important is what it does *not* load: a query
process (``rag search``, ``rag ask``, the API's readers) never imports torch, transformers or
sentence-transformers, which cost seconds before the first query.

Where torch is loaded anyway (ingest, or the first query for a model not exported yet) the transformer
body is exported once to a cache folder, together with everything needed to run it without torch: the
tokenizer as ``tokenizer.json`` (read by the ``tokenizers`` package), a ``manifest.json`` with the
pooling, normalisation, maximum length and dimension, and the graph as ONNX Runtime optimised it (so a
query process does not redo that work). The folder is named by the model's identity: its
path and a content fingerprint of every file in the model folder, so a changed model never reuses a
stale export. A model folder that already ships ``onnx/model.onnx`` next to its ``tokenizer.json`` is used
as it is, without any export. Vectors match the PyTorch path within 1e-5 (tested), so queries and the
documents embedded by PyTorch stay comparable. Only the standard sentence-transformers stack
(Transformer -> mean Pooling -> optional Normalize) is served; anything else keeps the PyTorch path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

#: Bumped when the cached folder's layout or the export changes, so old folders are not reused.
EXPORT_FORMAT = 2
_MANIFEST = "manifest.json"
_FINGERPRINTS = "fingerprints.json"
_fingerprint_lock = threading.Lock()


def cache_dir() -> Path:
    """``$RAG_CACHE_DIR``, else ``$XDG_CACHE_HOME/rag-platform``, else ``~/.cache/rag-platform``."""
    if os.environ.get("RAG_CACHE_DIR"):
        return Path(os.environ["RAG_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "rag-platform"


@dataclass(frozen=True, slots=True)
class EncoderManifest:
    """How to run an exported encoder without torch; stored as ``manifest.json`` next to ``model.onnx``."""

    model_path: str
    fingerprint: str
    max_length: int
    dimension: int
    normalize: bool
    inputs: tuple[str, ...]
    format: int = EXPORT_FORMAT


def local_model_dir(model_path: str) -> Path | None:
    """The folder holding ``model_path``'s files: the path itself, or a hub model's cached snapshot."""
    folder = Path(model_path).expanduser()
    if folder.is_dir():
        return folder.resolve()
    if model_path.count("/") != 1:
        return None
    try:  # a hub name: only a copy already on disk counts (no network on the query path)
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(model_path, "modules.json")
    return Path(found).parent if isinstance(found, str) else None


def model_fingerprint(folder: Path) -> str:
    """A SHA-256 over the relative path and content of every file in ``folder``.

    Hashing MiniLM's 88 MB of weights takes ~0.1 s, too much for every query process, so each file's
    digest is remembered in the cache keyed by its path, size and modification time (as ``git`` does):
    an unchanged model costs a few ``stat`` calls, and any rewrite of a file is hashed again.
    """
    memo_path = cache_dir() / "onnx" / _FINGERPRINTS
    with _fingerprint_lock:
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        total, changed = hashlib.sha256(), False
        for file in sorted(p for p in folder.rglob("*") if p.is_file() and ".git" not in p.parts):
            stat = file.stat()
            key = str(file.resolve())
            entry = memo.get(key)
            if not (isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns]):
                with file.open("rb") as handle:
                    entry = [stat.st_size, stat.st_mtime_ns, hashlib.file_digest(handle, "sha256").hexdigest()]
                memo[key], changed = entry, True
            total.update(f"{file.relative_to(folder).as_posix()}\0{entry[2]}\n".encode())
        if changed:
            try:
                _write_atomic(memo_path, json.dumps(memo, indent=0).encode())
            except OSError as exc:  # a read-only cache only costs the hashing next time
                log.debug("cannot remember model fingerprints in %s: %s", memo_path, exc)
    return total.hexdigest()


def export_folder(model_path: str) -> Path | None:
    """Where ``model_path``'s export lives (whether or not it exists yet); ``None`` without a local copy."""
    folder = local_model_dir(model_path)
    if folder is None:
        return None
    key = hashlib.sha256(f"{folder}|{model_fingerprint(folder)}|{EXPORT_FORMAT}".encode()).hexdigest()[:16]
    return cache_dir() / "onnx" / f"{folder.name}-{key}"


class OnnxQueryEncoder:
    """Embeds one text at a time with ONNX Runtime and the ``tokenizers`` package (no torch).

    Build it with :meth:`load` (torch-free, from the cache or the model folder's own ONNX file) or
    :meth:`for_model` (exports first where needed, from a loaded sentence-transformers model).
    """

    def __init__(self, session: Any, tokenizer: Tokenizer, manifest: EncoderManifest) -> None:
        self._session, self.manifest = session, manifest
        self._inputs = {i.name for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        self._output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]
        self._tokenizer = tokenizer
        tokenizer.no_padding()
        # ``tokenizer.json`` files often carry a shorter truncation (MiniLM's says 128); the model's own
        # maximum is what sentence-transformers truncates to.
        tokenizer.enable_truncation(manifest.max_length)

    @property
    def dimension(self) -> int:
        return self.manifest.dimension

    @classmethod
    def load(cls, model_path: str) -> OnnxQueryEncoder | None:
        """The encoder for ``model_path`` without importing torch, or ``None`` when none is ready.

        Looks first for an export in the cache, then for ``onnx/model.onnx`` shipped in the model folder.
        """
        try:
            import onnxruntime  # noqa: F401 - only checking that it is there
            from tokenizers import Tokenizer
        except ImportError:
            log.info("onnxruntime or tokenizers is not installed; queries are embedded with PyTorch")
            return None
        try:
            folder = export_folder(model_path)
            if folder is None:
                return None
            if (folder / _MANIFEST).exists():
                manifest = _read_manifest(folder / _MANIFEST)
                onnx_file, tokenizer_file = _optimized_or_plain(folder), folder / "tokenizer.json"
            else:
                model_dir = local_model_dir(model_path)
                manifest = _shipped_manifest(model_dir, folder.name) if model_dir else None
                if manifest is None:
                    return None
                onnx_file, tokenizer_file = model_dir / "onnx" / "model.onnx", model_dir / "tokenizer.json"
            if manifest is None or manifest.format != EXPORT_FORMAT:
                return None
            session = _session(onnx_file)
            return cls(session, Tokenizer.from_file(str(tokenizer_file)), manifest)
        except Exception as exc:  # noqa: BLE001 - a broken cache means: export again or use PyTorch
            log.warning("cannot load the ONNX query encoder for %s (%s)", model_path, exc)
            return None

    @classmethod
    def for_model(cls, model: SentenceTransformer, model_path: str) -> OnnxQueryEncoder | None:
        """An encoder for the loaded ``model``, exported first if needed; ``None`` (logged) when ONNX
        cannot serve it exactly."""
        if ensure_export(model, model_path):
            return cls.load(model_path)
        return None

    def encode(self, text: str) -> np.ndarray:
        """The mean-pooled (and, as the model says, L2-normalised) embedding of ``text``, ``(dimension,)``."""
        encoding = self._tokenizer.encode(text)
        columns = {"input_ids": encoding.ids, "attention_mask": encoding.attention_mask,
                   "token_type_ids": encoding.type_ids}
        feeds = {name: np.asarray([columns[name]], dtype=np.int64) for name in self._inputs}
        hidden = self._session.run([self._output], feeds)[0]
        mask = feeds.get("attention_mask", np.asarray([encoding.attention_mask]))[..., None].astype(np.float32)
        vector = (hidden * mask).sum(axis=1)[0] / mask.sum()
        if self.manifest.normalize:
            vector = vector / np.linalg.norm(vector)
        return vector.astype(np.float32)

    @cached_property
    def _counter(self) -> Tokenizer:
        from tokenizers import Tokenizer

        counter = Tokenizer.from_str(self._tokenizer.to_str())
        counter.no_truncation()
        counter.no_padding()
        return counter

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens or truncation (as the transformers tokenizer counts)."""
        return len(self._counter.encode(text, add_special_tokens=False).ids)


def is_standard_stack(model: SentenceTransformer) -> bool:
    """Transformer -> mean Pooling -> optional Normalize: the only stack :class:`OnnxQueryEncoder` runs."""
    names = [type(module).__name__ for module in model]
    if names[:2] != ["Transformer", "Pooling"] or names[2:] not in ([], ["Normalize"]):
        return False
    pooling = model[1]
    mode = getattr(pooling, "pooling_mode_mean_tokens", None)
    if mode is None:  # sentence-transformers 5 keeps the mode in its config
        mode = getattr(pooling, "get_config_dict", dict)().get("pooling_mode") == "mean"
    return bool(mode)


def ensure_export(model: SentenceTransformer, model_path: str) -> bool:
    """Export ``model`` (loaded from ``model_path``) for :meth:`OnnxQueryEncoder.load` unless done already.

    Returns:
        ``True`` when a torch-free encoder can be loaded now; ``False`` (logged) when the model is not the
        standard stack, has no local copy to fingerprint, or the export failed.
    """
    if not is_standard_stack(model):
        log.info("embedding model is not Transformer+mean pooling; queries are embedded with PyTorch")
        return False
    try:
        import onnxruntime  # noqa: F401 - the export is useless without it
        import tokenizers  # noqa: F401
    except ImportError:
        log.info("onnxruntime or tokenizers is not installed; queries are embedded with PyTorch")
        return False
    try:
        folder = export_folder(model_path)
        if folder is None:
            log.info("no local copy of %s to fingerprint; queries are embedded with PyTorch", model_path)
            return False
        model_dir = local_model_dir(model_path)
        if (folder / _MANIFEST).exists() or (model_dir and _shipped_manifest(model_dir, folder.name)):
            return True
        _export(model, folder, EncoderManifest(
            model_path=str(model_dir), fingerprint=folder.name, max_length=int(model.max_seq_length),
            dimension=int(_dimension(model)), normalize=[type(m).__name__ for m in model][-1] == "Normalize",
            inputs=(),
        ))
        return True
    except Exception as exc:  # noqa: BLE001 - any export failure means: use PyTorch
        log.warning("ONNX query encoder unavailable (%s); queries are embedded with PyTorch", exc)
        return False


def _dimension(model: SentenceTransformer) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def _optimized_or_plain(folder: Path) -> Path:
    """The graph ONNX Runtime optimised at export (loads ~70 ms faster) when this onnxruntime wrote it;
    else the plain export (the fused operators of another version might not load)."""
    import onnxruntime as ort

    stamp = folder / "optimized.txt"
    if stamp.is_file() and stamp.read_text().strip() == ort.__version__:
        return folder / "model.opt.onnx"
    return folder / "model.onnx"


def _save_optimized(folder: Path) -> None:
    """Save ``model.onnx`` after ONNX Runtime's extended (hardware-independent) graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(folder / "model.opt.onnx")
    ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    (folder / "optimized.txt").write_text(ort.__version__)


def _session(onnx_file: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = min(2, os.cpu_count() or 1)
    # One short query, then idle: worker threads that spin-wait for the next operator only burn CPU the
    # rest of the process (and, on a small machine, everything else) needs. Measured on 2 busy cores:
    # 19 ms a query instead of 31-35 ms, and half the CPU seconds.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])


def _read_manifest(path: Path) -> EncoderManifest | None:
    data = json.loads(path.read_text())
    if data.get("format") != EXPORT_FORMAT:
        return None
    data["inputs"] = tuple(data.get("inputs", ()))
    return EncoderManifest(**data)


def _shipped_manifest(model_dir: Path, fingerprint: str) -> EncoderManifest | None:
    """A manifest for a model folder that ships ``onnx/model.onnx`` and ``tokenizer.json`` itself (as
    sentence-transformers' ONNX backend saves them), read from its configuration files; ``None`` unless the
    stack is the standard one."""
    if not (model_dir / "onnx" / "model.onnx").is_file() or not (model_dir / "tokenizer.json").is_file():
        return None
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
            return None
        pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text())
        mean = pooling.get("pooling_mode_mean_tokens") or pooling.get("pooling_mode") == "mean"
        others = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v and k != "pooling_mode_mean_tokens"]
        if not mean or others:
            return None
        st_config = json.loads((model_dir / "sentence_bert_config.json").read_text())
        return EncoderManifest(
            model_path=str(model_dir), fingerprint=fingerprint, max_length=int(st_config["max_seq_length"]),
            dimension=int(pooling["word_embedding_dimension"]), normalize=kinds[2:] == ["Normalize"], inputs=(),
        )
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _export(model: SentenceTransformer, folder: Path, manifest: EncoderManifest) -> None:
    """Export the transformer body, the tokenizer and the manifest to ``folder`` (atomically: the folder
    appears complete or not at all, so concurrent processes may race to export without harm)."""
    import shutil

    import torch

    transformer = model[0].auto_model.eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = model.tokenizer(["an example query"], return_tensors="pt")
    names = [n for n in names if n in sample]

    class Body(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.transformer(**dict(zip(names, tensors))).last_hidden_state

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    log.info("exporting the embedding model to ONNX at %s (once)", folder)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about shapes; the result is verified by tests
            torch.onnx.export(
                Body(), tuple(sample[n] for n in names), str(tmp / "model.onnx"), input_names=names,
                output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]},
            )
        # The tokenizer exactly as transformers runs it (added tokens, normaliser), for the tokenizers package.
        model.tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        _save_optimized(tmp)
        data = asdict(manifest) | {"inputs": names}
        (tmp / _MANIFEST).write_text(json.dumps(data, indent=2))
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / _MANIFEST).exists():  # another process's export won the race; else a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
