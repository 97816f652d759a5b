"""Where one encode's time goes: tokenization, the transformer, the pooling (projection + max).

    python benchmarks/encode_profile.py openvino-int8 --model bert-base --docs 32
    python benchmarks/encode_profile.py fp32 --model packaged --docs 320 --skip 400

Loads one variant (names as in ``benchmarks/encode.py``: fp32, bf16, int8, onnx-qint8, openvino-bf16,
openvino-int8; the export files must exist in the model folder, which ``--model bert-base`` builds
with them in ``--work``), warms up on one batch, then times each module's ``forward`` and the
tokenizer over one encode of the documents. Prints one JSON line with the seconds and the load
average: the figures of ``benchmarks/encode_bounds.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from encode import build_bert_base, doc_text, load_variant, packaged_model, read_jsonl


def _timed(owner, name: str, times: dict[str, float], key: str) -> None:
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            times[key] = times.get(key, 0.0) + time.perf_counter() - start

    setattr(owner, name, wrapper)


def main() -> None:
    """Profile one variant's encode by module."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant")
    parser.add_argument("--model", default="packaged", help="'packaged', 'bert-base' or a model folder")
    parser.add_argument("--corpus", type=Path, default=Path(__file__).parents[2] / "shared/data/cranfield")
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--skip", type=int, default=0, help="start at this document (held-out ones)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None, help="folder for the bert-base model and its exports")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="encode-profile-"))
    model_path = args.model
    if args.model == "bert-base":
        model_path = str(work / "bert-base")
        if not (Path(model_path) / "config.json").is_file():
            build_bert_base(Path(model_path))
    elif args.model == "packaged":
        model_path = packaged_model()
    rows = read_jsonl(args.corpus / "corpus.jsonl", args.skip + args.docs)[args.skip :]
    texts = [doc_text(d) for d in rows]
    (work / "texts.json").write_text(json.dumps(texts))  # calibration texts for openvino-int8's export
    model = load_variant(args.variant, model_path, work)
    model.max_seq_length = args.max_length
    transformer, pooling = model[0], model[1]
    times: dict[str, float] = {}
    _timed(transformer, "forward", times, "transformer_s")
    _timed(pooling, "forward", times, "pooling_s")
    _timed(transformer, "tokenize", times, "tokenize_s")
    model.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    times.clear()
    start = time.perf_counter()
    model.encode(texts, batch_size=args.batch_size)
    total = time.perf_counter() - start
    ids = transformer.tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]
    figures = {"variant": args.variant, "docs": len(texts), "tokens": sum(map(len, ids)), "total_s": total}
    figures.update(times, docs_per_s=len(texts) / total, load=os.getloadavg())
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
