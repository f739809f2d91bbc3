"""Exact-match evaluation of a checkpoint on DeepMind-format place-value files.

    python -m training.evaluate --checkpoint checkpoints/memsizer --data FILE_OR_DIR [--json]

Reports accuracy overall and per place name (units, tens, ..., hundred decillions).
`--record NAME` also stores the result in the checkpoint's config.json under "evaluation".
"""
import argparse
import json
import logging
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from models.checkpoint import CONFIG_FILE, CheckpointError, load_checkpoint, read_config, write_json
from models.cpu import int8_kernel
from models.ctranslate2_runtime import COMPUTE_TYPES as CTRANSLATE2_COMPUTE_TYPES, CTranslate2Runner, convert
from models.dynamic_int8 import quantize_linear_layers
from models.tokenizer import pad_batch
from models.task import PLACE_NAMES, place_of
from training.data import read_examples

log = logging.getLogger(__name__)


def predict(model, tokenizer, questions, batch_size=256, device="cpu", engine=None) -> list[str]:
    """Greedy answers for `questions`, batched by similar length to cut padding; from `engine`
    (a CTranslate2Runner of the same weights) instead of torch when one is given."""
    order = sorted(range(len(questions)), key=lambda i: len(questions[i]))
    answers = [""] * len(questions)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            ids = [tokenizer.encode(questions[i]) for i in chunk]
            if engine is not None:
                answers_here = engine.answer_ids(ids)
            else:
                answers_here = [tokenizer.decode(row) for row in model.generate(pad_batch(ids).to(device)).tolist()]
            for i, answer in zip(chunk, answers_here):
                answers[i] = answer
    return answers


def evaluate_examples(model, tokenizer, examples, batch_size=256, device="cpu", engine=None) -> dict:
    """Exact-match accuracy overall and per place name."""
    start = time.perf_counter()
    predictions = predict(model, tokenizer, [q for q, _ in examples], batch_size, device, engine)
    seconds = time.perf_counter() - start
    hits, counts = defaultdict(int), defaultdict(int)
    for (question, answer), predicted in zip(examples, predictions):
        place = place_of(question)
        counts[place] += 1
        hits[place] += predicted == answer
    rank = {name: i for i, name in enumerate(PLACE_NAMES)}
    per_place = {p: {"correct": hits[p], "total": counts[p], "accuracy": hits[p] / counts[p]}
                 for p in sorted(counts, key=lambda p: rank.get(p, len(rank)))}
    correct, total = sum(hits.values()), len(examples)
    return {"accuracy": correct / total if total else 0.0, "correct": correct, "total": total,
            "per_place": per_place, "seconds": seconds,
            "examples_per_second": total / seconds if seconds > 0 else None}


def format_report(result: dict) -> str:
    lines = [f"{result['model']}: {result['correct']}/{result['total']} correct, "
             f"accuracy {result['accuracy']:.4%} ({result['examples_per_second']:.0f} questions/s)"]
    for place, row in result["per_place"].items():
        lines.append(f"  {place:<22} {row['correct']:>6}/{row['total']:<6} {row['accuracy']:.4%}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on DeepMind-format files.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + model.safetensors)")
    parser.add_argument("--data", required=True, help="DeepMind-format file or a directory of them")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--record", metavar="NAME", help="store the result in config.json under evaluation.NAME")
    parser.add_argument("--split", choices=["interpolate", "train", "extrapolate"], default=None,
                        help="the distribution the data comes from, stored with --record (the page's per-place "
                             "charts group evaluations by it; default: the split NAME starts with)")
    parser.add_argument("--runtime", choices=["torch", "torch-int8", *CTRANSLATE2_COMPUTE_TYPES], default="torch",
                        help="answer with the serving runtime PLACEVALUE_RUNTIME would use (torch-int8: int8 "
                             "weights on the CPU; CTranslate2 converts these very weights, only for backends it "
                             "can express)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    try:
        model, tokenizer, config = load_checkpoint(args.checkpoint, device=device)
        examples = read_examples(args.data)
    except (CheckpointError, ValueError) as err:
        sys.exit(f"error: {err}")
    with tempfile.TemporaryDirectory() as engine_dir:
        engine = None
        if args.runtime == "torch-int8":
            try:
                model = quantize_linear_layers(model)
            except ValueError as err:
                sys.exit(f"error: {err}")
        elif args.runtime != "torch":
            compute_type = CTRANSLATE2_COMPUTE_TYPES[args.runtime]
            try:
                converted = convert(model, engine_dir, quantization=None if compute_type == "float32" else compute_type)
            except ValueError as err:
                sys.exit(f"error: {err}")
            engine = CTranslate2Runner(converted, tokenizer, torch.get_num_threads(), compute_type, device=device)
        result = {"model": config["model"], "checkpoint": str(args.checkpoint), "data": str(args.data),
                  "weights_sha256": config["weights"]["sha256"], "runtime": args.runtime,
                  **evaluate_examples(model, tokenizer, examples, args.batch_size, device, engine)}
        if args.runtime.endswith("int8"):  # int8 answers depend on the CPU's kernel class (models/cpu.py)
            result["int8_kernel"] = int8_kernel() if device == "cpu" else device
    if args.record:
        stored = read_config(args.checkpoint)
        split = args.split or next((s for s in ("interpolate", "train", "extrapolate") if args.record.startswith(s)), None)
        stored.setdefault("evaluation", {})[args.record] = {
            "split": split, **{k: result[k] for k in ("data", "accuracy", "correct", "total", "per_place", "weights_sha256",
                                                      "runtime")},
            **({"int8_kernel": result["int8_kernel"]} if "int8_kernel" in result else {})}
        write_json(Path(args.checkpoint) / CONFIG_FILE, stored)
    print(json.dumps(result, indent=2) if args.json else format_report(result))


if __name__ == "__main__":
    main()
