"""A BERT sentence encoder as an ONNX graph, built from a model directory's safetensors without PyTorch.

sentence-transformers models such as all-MiniLM-L6-v2 are a Hugging Face ``BertModel`` followed by
mean pooling and L2 normalisation. This module writes that computation as ONNX operators (opset 17,
``LayerNormalization``) with the directory's own float32 weights as initializers, so ONNX Runtime
computes the same vectors as sentence-transformers on PyTorch (within float32 rounding: see
tests/unit/test_onnx_parity.py). Only what such models use is built: absolute position embeddings,
exact (erf) GELU, post-layer-norm encoder layers, mean pooling with the attention mask or
first-token (CLS) pooling, and normalisation. Anything else is refused with the reason (``build_graph`` raises ConfigError).

Graph inputs: ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, batch x sequence);
output ``sentence_embedding`` (float32, batch x hidden), unit length.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from core.errors import ConfigError

OPSET = 17


def _refuse(directory: Path, what: str) -> ConfigError:
    return ConfigError(
        f"embedding model {directory}: {what}; the onnxruntime backend builds BERT encoders with mean or CLS pooling only",
        "use embedding.backend = 'sentence-transformers' for this model (pip install '.[torch]')",
    )


def _check(directory: Path, config: dict[str, Any]) -> None:
    if config.get("model_type") != "bert":
        raise _refuse(directory, f"model_type is {config.get('model_type')!r}, not 'bert'")
    if config.get("hidden_act") != "gelu":
        raise _refuse(directory, f"hidden_act is {config.get('hidden_act')!r}, not 'gelu'")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise _refuse(directory, "position embeddings are not absolute")
    modules = directory / "modules.json"
    if modules.exists():
        kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads(modules.read_text())]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            raise _refuse(directory, f"its modules are {kinds}")
    pooling = directory / "1_Pooling" / "config.json"
    if pooling.exists():
        modes = {k for k, v in json.loads(pooling.read_text()).items() if k.startswith("pooling_mode") and v}
        if modes not in ({"pooling_mode_mean_tokens"}, {"pooling_mode_cls_token"}):
            raise _refuse(directory, f"its pooling is {sorted(modes)}")


def cls_pooling(directory: Path) -> bool:
    """Whether the model pools by its first ([CLS]) token instead of the mean of its tokens."""
    pooling = directory / "1_Pooling" / "config.json"
    return pooling.exists() and bool(json.loads(pooling.read_text()).get("pooling_mode_cls_token"))


def normalises(directory: Path) -> bool:
    """Whether the model ends in sentence-transformers' Normalize module (no modules.json: assume yes)."""
    modules = directory / "modules.json"
    if not modules.exists():
        return True
    return any(m["type"].endswith("Normalize") for m in json.loads(modules.read_text()))


class _Builder:
    """Accumulates nodes and initializers; names are unique by a counter."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64), "ints")

    def scalar(self, value: float) -> str:
        return self.const(np.array(value, dtype=np.float32), "scalar")

    def weight(self, key: str, transpose: bool = False) -> str:
        value = self.weights[key].astype(np.float32)
        return self.const(np.ascontiguousarray(value.T if transpose else value), key.replace(".", "_"))

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def linear(self, x: str, prefix: str) -> str:
        # torch's Linear stores weight as (out, in): x @ W^T + b.
        return self.op(
            "Add",
            [self.op("MatMul", [x, self.weight(f"{prefix}.weight", True)]), self.weight(f"{prefix}.bias")],
        )

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")],
            axis=-1,
            epsilon=eps,
        )


def _prefix(weights: dict[str, np.ndarray]) -> str:
    """Weights saved from BertModel have no prefix; from BertFor*, ``bert.``."""
    return "" if "embeddings.word_embeddings.weight" in weights else "bert."


def build_graph(directory: Path, weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The encoder + mean pooling (+ normalisation) of ``directory`` as an ONNX model (nothing written)."""
    config = json.loads((directory / "config.json").read_text())
    _check(directory, config)
    if weights is None:
        from safetensors.numpy import load_file

        path = directory / "model.safetensors"
        if not path.exists():
            raise _refuse(directory, "it has no model.safetensors")
        weights = load_file(str(path))
    pre = _prefix(weights)
    weights = {k.removeprefix(pre): v for k, v in weights.items()}
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim, eps = hidden // heads, float(config.get("layer_norm_eps", 1e-12))
    b = _Builder(weights)

    # Embeddings: word + position (0..S-1) + token type, then LayerNorm.
    seq_len = b.op(
        "Gather", [b.op("Shape", ["input_ids"]), b.const(np.array(1, dtype=np.int64))], axis=0
    )  # a scalar, for Range
    positions = b.op(
        "Range", [b.const(np.array(0, dtype=np.int64)), seq_len, b.const(np.array(1, dtype=np.int64))]
    )
    x = b.op("Gather", [b.weight("embeddings.word_embeddings.weight"), "input_ids"])
    x = b.op("Add", [x, b.op("Gather", [b.weight("embeddings.position_embeddings.weight"), positions])])
    x = b.op(
        "Add", [x, b.op("Gather", [b.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"])]
    )
    x = b.layer_norm(x, "embeddings.LayerNorm", eps)

    # Padding positions get the lowest float32 added before softmax, as transformers does.
    mask = b.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    bias = b.op("Mul", [b.op("Sub", [b.scalar(1.0), mask]), b.scalar(float(np.finfo(np.float32).min))])
    bias = b.op("Unsqueeze", [bias, b.ints(1, 2)])  # B x 1 x 1 x S
    split_heads = b.ints(0, 0, heads, head_dim)  # Reshape's 0 keeps batch and sequence
    merge_heads = b.ints(0, 0, hidden)
    scale = b.scalar(1.0 / math.sqrt(head_dim))

    for n in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{n}"

        def heads_of(x: str, which: str, perm: list[int], p: str = p) -> str:
            projected = b.linear(x, f"{p}.attention.self.{which}")
            return b.op("Transpose", [b.op("Reshape", [projected, split_heads])], perm=perm)

        q = heads_of(x, "query", [0, 2, 1, 3])  # B x H x S x D
        k = heads_of(x, "key", [0, 2, 3, 1])  # B x H x D x S
        v = heads_of(x, "value", [0, 2, 1, 3])
        scores = b.op("Add", [b.op("Mul", [b.op("MatMul", [q, k]), scale]), bias])
        context = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
        context = b.op("Reshape", [b.op("Transpose", [context], perm=[0, 2, 1, 3]), merge_heads])
        attended = b.linear(context, f"{p}.attention.output.dense")
        x = b.layer_norm(b.op("Add", [attended, x]), f"{p}.attention.output.LayerNorm", eps)
        inner = b.linear(x, f"{p}.intermediate.dense")
        # Exact GELU, as BERT's "gelu": 0.5 * x * (1 + erf(x / sqrt(2))).
        erf = b.op("Erf", [b.op("Mul", [inner, b.scalar(1.0 / math.sqrt(2.0))])])
        inner = b.op("Mul", [b.op("Mul", [inner, b.scalar(0.5)]), b.op("Add", [erf, b.scalar(1.0)])])
        x = b.layer_norm(b.op("Add", [b.linear(inner, f"{p}.output.dense"), x]), f"{p}.output.LayerNorm", eps)

    if cls_pooling(directory):
        out = b.op("Gather", [x, b.const(np.array(0, dtype=np.int64))], axis=1)  # B x hidden
    else:
        # Mean pooling over real tokens: sum(x * mask) / max(sum(mask), 1e-9), as sentence-transformers.
        mask3 = b.op("Unsqueeze", [mask, b.ints(2)])
        summed = b.op("ReduceSum", [b.op("Mul", [x, mask3]), b.ints(1)], keepdims=0)
        counts = b.op("Max", [b.op("ReduceSum", [mask3, b.ints(1)], keepdims=0), b.scalar(1e-9)])
        out = b.op("Div", [summed, counts])
    if normalises(directory):
        # torch.nn.functional.normalize: x / max(||x||_2, 1e-12). (ReduceL2 takes axes as an
        # attribute until opset 18.)
        norm = b.op("Max", [b.op("ReduceL2", [out], axes=[1], keepdims=1), b.scalar(1e-12)])
        out = b.op("Div", [out, norm])
    b.nodes.append(helper.make_node("Identity", [out], ["sentence_embedding"]))

    ints = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])
    graph = helper.make_graph(b.nodes, "sentence_encoder", ints, [output], b.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="featurectl"
    )
    model.ir_version = 8  # readable by every onnxruntime that supports opset 17
    return model
