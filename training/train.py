"""Train a place-value encoder-decoder (any registered backend) on generated DeepMind data.

    python -m training.train --model memsizer                 # paper config, default recipe
    torchrun --nproc_per_node 2 -m training.train --model transformer   # data parallel (DDP)

Writes a servable checkpoint to --out (evaluated from its stored files), resumable state to
--run-dir every few minutes, and a JSON training report with the learning curve (also as
TensorBoard events in <run dir>/tensorboard: `tensorboard --logdir runs`). A run whose loss turns
NaN or infinite stops with an error, its last finite state kept in --run-dir.
"""
import argparse
import gc
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from models.checkpoint import (CONFIG_FILE, WEIGHT_FORMATS, CheckpointError, load_checkpoint, read_config,
                               save_checkpoint, weights_as_stored, write_json)
from models import registry
from models.config import DIGIT_POSITION_MODES, POSITION_MODES, RELATIVE_POSITION_MODES, ModelConfig
from models.runtimes import DEVICES, resolve_device
from models.seq2seq import Seq2Seq
from models.slim import check_slim, slim_backward
from models.tokenizer import PAD, Tokenizer, pad_batch
from models.task import SPLITS, asked_places, generate, generate_per_place
from training.curves import curve_writer, write_point
from training.data import bucketed_batch, curriculum_split, training_batch
from training.evaluate import evaluate_examples
from training.export import add_group_size_flag, check_group_size
from training.recipe import ARCH_FIELDS, TRAINING_ONLY_FIELDS, flag
from training.state import STATE_JSON, load_train_state, parameters_digest, save_train_state

log = logging.getLogger("training.train")
HELD_OUT_SEED = 1_000_003  # the periodic-evaluation sample; never used to draw training batches


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per config field, named and typed after it: --d-model, --n-heads, ...; and
    --<backend>-<field> for each registered backend's own settings, e.g. --memsizer-k."""
    group = p.add_argument_group("architecture (models.config.ModelConfig)")
    defaults = ModelConfig(backend=registry.names()[0])  # the shared fields' defaults
    for name in ARCH_FIELDS:
        default = getattr(defaults, name)
        choices = {"source_positions": POSITION_MODES, "digit_positions": DIGIT_POSITION_MODES,
                   "relative_positions": RELATIVE_POSITION_MODES}.get(name)
        group.add_argument(flag(name), type=type(default), default=default, choices=choices,
                           help=f"default {default}")
    for spec in registry.backends():
        settings = spec.settings()
        for field in fields(settings):
            default = getattr(settings, field.name)
            group.add_argument(flag(f"{spec.name}_{field.name}"), dest=f"{spec.name}__{field.name}",
                               type=type(default), default=default,
                               help=f"{spec.display_name} only: {field.name} (default {default})")


def build_parser() -> argparse.ArgumentParser:
    """The CLI's flags: a declarative list, long because every hyperparameter is an option."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=registry.names(), required=True, help="the backend to train")
    add_config_flags(p)
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=64, help="examples per micro-batch per process")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches whose gradients are summed into one optimizer step (effective batch = "
                        "batch size x this x processes)")
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--max-steps", type=int, default=30000, help="step budget; the schedule decays over it")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="after warmup: cosine decay to 10%% of peak at --max-steps, or constant")
    p.add_argument("--clip-norm", type=float, default=1.0)
    p.add_argument("--split", choices=[s for s in SPLITS if s.startswith("train")], default="train")
    p.add_argument("--curriculum-steps", type=int, default=0,
                   help="train this many steps each on train-easy, -medium and -hard before --split (0 = off)")
    # half of every batch balanced: with abacus positions it taught every place fastest (benchmarks/studies/README.md, accuracy levers)
    p.add_argument("--balanced-share", type=share, default=0.5,
                   help="share of every batch drawn with place names uniform over the split's places (rare "
                        "places oversampled, nothing outside the split's support; 0 = DeepMind's weights)")
    p.add_argument("--beyond-share", type=share, default=0.0,
                   help="share of every batch asking a place beyond the number's digits (answer 0), which "
                        "DeepMind's sampler never asks and people do (0 = DeepMind's data only)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing (0 = off)")
    p.add_argument("--bucket-pool", type=int, default=1,
                   help="regroup this many consecutive batches by question length to cut padding (1 = off)")
    p.add_argument("--eval-every", type=int, default=500, help="steps between held-out evaluations")
    p.add_argument("--eval-size", type=int, default=1000,
                   help="held-out questions (with --target-metric worst-place: spread equally over the places)")
    # the default stopping rule judges the training distribution's weakest place: interpolate
    # never asks above ten millions, so stopping on it left billions at 69% (benchmarks/studies/README.md, accuracy levers)
    p.add_argument("--eval-split", choices=list(SPLITS), default="train",
                   help="distribution of the held-out questions (a seed no training batch uses)")
    p.add_argument("--target-accuracy", type=float, default=None, help="stop once held-out accuracy reaches this")
    p.add_argument("--target-metric", choices=["accuracy", "worst-place"], default="worst-place",
                   help="what --target-accuracy judges: overall held-out accuracy, or the lowest accuracy "
                        "of any place name (measured on an equal number of questions per place)")
    p.add_argument("--eval-per-place", type=int, default=None,
                   help="held-out questions per place name of --eval-split (its own sampler); default: "
                        "--eval-size spread over the places with --target-metric worst-place, else none "
                        "(--eval-size questions drawn as the split draws them)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall time (this run)")
    p.add_argument("--save-every-minutes", type=float, default=5.0)
    p.add_argument("--out", default=None, help="checkpoint directory (default checkpoints/<model>)")
    p.add_argument("--run-dir", default=None, help="resumable state and report (default runs/<model>)")
    p.add_argument("--weights-format", choices=WEIGHT_FORMATS, default="int4")
    add_group_size_flag(p)
    p.add_argument("--quantization-aware", action="store_true",
                   help="train against the weights as --weights-format will store them (straight-through "
                        "gradients): fine-tuning a quantized checkpoint moves mostly by less than a rounding "
                        "step, which plain training loses when it stores the result")
    p.add_argument("--resume", action="store_true", help="continue from the state in --run-dir")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from a checkpoint's weights (fresh optimizer and schedule) and train further: "
                        "its architecture becomes the default, and only --dropout may differ from it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for forward/backward")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward pass")
    p.add_argument("--slim-slice", type=int, default=0, metavar="C",
                   help="train the decoder with SLiM (models/slim.py) in slices of C target positions: the same "
                        "gradients, peak memory set by C instead of the target length (0 = plain back-propagation; "
                        "a backend whose causal state can be rewound, single process, no --compile)")
    return p


def check_recipe(args) -> None:
    """A ValueError naming the first inconsistent option; fills the defaults that depend on others.
    The CLI and direct callers of train() share these checks."""
    if args.slim_slice < 0:
        raise ValueError("--slim-slice must be 0 (off) or a positive slice length")
    if args.slim_slice and args.compile:
        raise ValueError("--slim-slice runs the decoder slice by slice outside torch.compile: drop --compile")
    if args.bucket_pool < 1:
        raise ValueError("--bucket-pool must be at least 1")
    if getattr(args, "quantization_aware", False) and args.weights_format == "float32":
        raise ValueError("--quantization-aware trains against a quantized format: give --weights-format int8 or int4")
    if args.balanced_share + args.beyond_share > 1:
        raise ValueError("--balanced-share and --beyond-share together exceed the whole batch")
    if args.grad_accum < 1:
        raise ValueError("--grad-accum must be at least 1")
    if args.curriculum_steps < 0:
        raise ValueError("--curriculum-steps must be 0 (off) or positive")
    if not 0.0 <= args.label_smoothing < 1.0:
        raise ValueError("--label-smoothing must be in [0, 1)")
    if args.eval_per_place is None and args.target_metric == "worst-place":
        args.eval_per_place = math.ceil(args.eval_size / len(asked_places(args.eval_split)))
    args.out = args.out or f"checkpoints/{args.model}"
    args.run_dir = args.run_dir or f"runs/{args.model}"


def parse_args(argv=None):
    """The CLI's options, checked; `argv` is kept for the checkpoint's provenance."""
    p = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.init_from:
        args = parse_with_checkpoint_defaults(p, argv, args)
    check_group_size(p, args)
    try:
        check_recipe(args)
    except ValueError as err:
        p.error(str(err))
    args.argv = argv
    return args


def parse_with_checkpoint_defaults(p: argparse.ArgumentParser, argv: list, args):
    """Parse again with --init-from's architecture as the defaults; an explicit flag that would
    change the function its weights compute is an error."""
    try:
        stored = ModelConfig.from_dict(read_config(args.init_from)["architecture"])
    except (CheckpointError, KeyError, TypeError, ValueError) as err:
        p.error(f"--init-from: {err}")
    if stored.backend != args.model:
        p.error(f"--init-from {args.init_from} holds a {stored.backend} model, not --model {args.model}")
    settings = {f"{args.model}__{f.name}": getattr(stored.settings, f.name) for f in fields(stored.settings)}
    p.set_defaults(**{name: getattr(stored, name) for name in ARCH_FIELDS}, **settings)
    args = p.parse_args(argv)
    changed = [flag(name) for name in ARCH_FIELDS
               if name not in TRAINING_ONLY_FIELDS and getattr(args, name) != getattr(stored, name)]
    changed += [flag(name.replace("__", "_")) for name, value in settings.items() if getattr(args, name) != value]
    if changed:
        p.error(f"--init-from keeps the checkpoint's architecture; {', '.join(changed)} would change it")
    return args


def model_config(args, tokenizer) -> ModelConfig:
    settings = {f.name: getattr(args, f"{args.model}__{f.name}") for f in fields(registry.get(args.model).settings)}
    return ModelConfig(backend=args.model, vocab_size=tokenizer.vocab_size, settings=settings,
                       **{name: getattr(args, name) for name in ARCH_FIELDS})


def learning_rate(step: int, args) -> float:
    """Linear warmup to --lr, then cosine decay to 10% of it at --max-steps (or constant)."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    if args.schedule == "constant":
        return args.lr
    progress = min(1.0, (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps))
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_batch(examples, tokenizer, device):
    """(src, tgt_in, tgt_out) tensors; the decoder reads bos+answer and predicts answer+eos."""
    src = pad_batch([tokenizer.encode(q) for q, _ in examples])
    tgt = pad_batch([tokenizer.encode_target(a) for _, a in examples])
    return src.to(device), tgt[:, :-1].to(device), tgt[:, 1:].to(device)


def hardware(device) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def git_commit() -> str | None:
    """The source commit; SOURCE_COMMIT names it where the tree was copied without .git."""
    if os.environ.get("SOURCE_COMMIT"):
        return os.environ["SOURCE_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def setup_distributed(args):
    """(rank, world_size, device); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = resolve_device(args.device).type == "cuda"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return rank, world, device


def share(text: str) -> float:
    """An argparse type: a fraction in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def worst_place(result: dict) -> float:
    """The lowest per-place accuracy of an evaluation: a rare place cannot hide in the average."""
    return min((p["accuracy"] for p in result["per_place"].values()), default=result["accuracy"])


@dataclass
class Run:
    """Everything one training run holds: the model and optimizer, where it runs, what it evaluates on,
    and its progress (step, examples, wall time, curve, the moving averages the bar shows)."""

    args: argparse.Namespace
    model: Seq2Seq
    optimizer: torch.optim.Optimizer
    tokenizer: Tokenizer
    device: torch.device
    rank: int
    world: int
    held_out: list
    progress: dict
    ddp: torch.nn.Module = None
    forward: torch.nn.Module = None
    autocast: object = None
    curves: object = None  # the TensorBoard writer (rank 0)
    parent: dict = None  # --init-from's checkpoint: path, weights digest and provenance


def start_run(args) -> Run:
    """Build the model and optimizer (resumed from --run-dir with --resume), the DDP wrapper and the held-out set."""
    rank, world, device = setup_distributed(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = Tokenizer()
    model = Seq2Seq(model_config(args, tokenizer)).to(device)
    if args.slim_slice:
        if world > 1:
            raise ValueError("--slim-slice computes gradients outside DDP's hooks: train in one process")
        check_slim(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  fused=device.type == "cuda")
    progress = {"step": 0, "examples": 0, "wall_seconds": 0.0, "curve": []}
    parent = None
    if getattr(args, "init_from", None):
        start, _, parent_config = load_checkpoint(args.init_from, device=device)
        if not args.resume:  # a resumed run's state already holds the weights it trained from these
            model.load_state_dict(start.state_dict())
        parent = {"checkpoint": str(args.init_from), "weights_sha256": parent_config["weights"]["sha256"],
                  "provenance": parent_config.get("provenance")}
    if args.resume:
        progress = load_train_state(args.run_dir, model, optimizer, device)
        model.resume_training(progress["step"] * args.grad_accum)
        log.info("resumed from %s at step %d", args.run_dir, progress["step"])
    held_out = (generate_per_place(args.eval_split, args.eval_per_place, seed=HELD_OUT_SEED) if args.eval_per_place
                else generate(args.eval_split, args.eval_size, seed=HELD_OUT_SEED))
    run = Run(args, model, optimizer, tokenizer, device, rank, world, held_out, progress, parent=parent)
    run.ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    # dynamic: question lengths vary per batch; static shapes would recompile for each new length
    run.forward = torch.compile(run.ddp, dynamic=True) if args.compile else run.ddp
    run.autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else nullcontext()
    run.curves = curve_writer(args.run_dir, progress["step"]) if rank == 0 else None
    return run


def batch_for(run: Run, index: int, split: str):
    """Batch number `index` of this rank's stream (regrouped by length with --bucket-pool)."""
    a = run.args
    if a.bucket_pool > 1:
        return bucketed_batch(a.seed, run.rank, index, a.batch_size, split, a.bucket_pool, a.balanced_share,
                              a.beyond_share)
    return training_batch(a.seed, run.rank, index, a.batch_size, split, a.balanced_share, a.beyond_share)


def train_step(run: Run, step: int):
    """One optimizer step over --grad-accum micro-batches; (loss, predictions or None, logits, targets)
    of the last micro-batch."""
    a, model = run.args, run.model
    model.train()
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(step, a)
    split = curriculum_split(step, a.curriculum_steps, a.split)
    run.optimizer.zero_grad(set_to_none=True)
    with as_trained(run):
        loss, predicted, logits, tgt_out = micro_batches(run, step, split)
    torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip_norm)
    run.optimizer.step()
    return loss, predicted, logits, tgt_out


def as_trained(run: Run):
    """The weights the steps train: with --quantization-aware, those the stored file gives back (the
    float weights then only accumulate updates, and answer worse than the file), else the float ones."""
    a = run.args
    if getattr(a, "quantization_aware", False):
        return weights_as_stored(run.model, a.weights_format, a.group_size)
    return nullcontext()


def micro_batches(run: Run, step: int, split: str):
    """Forward and backward over the step's --grad-accum micro-batches; the last one's (loss,
    predictions or None, logits, targets)."""
    a, model = run.args, run.model
    logits = predicted = None
    for micro in range(a.grad_accum):
        # the stream's batch number: unchanged without accumulation
        src, tgt_in, tgt_out = make_batch(batch_for(run, step * a.grad_accum + micro, split), run.tokenizer, run.device)
        # DDP all-reduces gradients on every backward; only the last micro-batch needs it
        syncing = run.world == 1 or micro == a.grad_accum - 1
        with nullcontext() if syncing else run.ddp.no_sync():
            if a.slim_slice:
                loss, predicted = slim_backward(model, src, tgt_in, tgt_out, a.slim_slice, a.label_smoothing,
                                                1 / a.grad_accum, run.autocast)
            else:
                with run.autocast:
                    logits, loss = run.forward(src, tgt_in, tgt_out, label_smoothing=a.label_smoothing)
                (loss / a.grad_accum).backward()  # the step's gradient: the mean over micro-batches
    return loss, predicted, logits, tgt_out


def update_averages(run: Run, loss, predicted, logits, tgt_out) -> None:
    """The moving averages of exact-match accuracy and loss that the bar and the curve show."""
    progress = run.progress
    predicted = logits.argmax(-1) if predicted is None else predicted
    exact = ((predicted == tgt_out) | (tgt_out == PAD)).all(dim=1).float().mean().item()
    acc, running_loss = progress.get("running_acc"), progress.get("running_loss")
    progress["running_acc"] = exact if acc is None else 0.9 * acc + 0.1 * exact
    progress["running_loss"] = loss.item() if running_loss is None else 0.9 * running_loss + 0.1 * loss.item()


def evaluate_and_decide(run: Run, step: int) -> bool:
    """Evaluate on the held-out set (rank 0), add the curve point, and say whether the target is reached."""
    a, progress = run.args, run.progress
    if run.rank != 0:
        return False
    with as_trained(run):
        result = evaluate_examples(run.model, run.tokenizer, run.held_out, device=run.device)
    point = {"step": step, "examples": progress["examples"], "wall_seconds": round(progress["wall_seconds"], 2),
             "loss": progress["running_loss"], "train_accuracy": progress["running_acc"],
             "eval_accuracy": result["accuracy"], "eval_worst_place": worst_place(result),
             "lr": learning_rate(step - 1, a)}
    progress["curve"].append(point)
    write_point(run.curves, point)
    log.info("step %d: held-out accuracy %.4f (worst place %.4f), loss %.4f", step, result["accuracy"],
             worst_place(result), progress["running_loss"])
    score = result["accuracy"] if a.target_metric == "accuracy" else worst_place(result)
    return a.target_accuracy is not None and score >= a.target_accuracy


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite: every later step would train on NaN."""


def weights_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def check_finite(run: Run, step: int) -> None:
    """Stop a diverged run at the first sync point instead of spending the rest of its budget on NaN
    (a diverged run's checkpoint would score near chance and read as the architecture's result)."""
    loss = run.progress["running_loss"]
    if agreed(run, not math.isfinite(loss)):  # every rank stops together (DDP)
        saved = run.progress.get("saved_step")
        raise TrainingDiverged(
            f"training diverged: the loss is {loss} by step {step}; "
            + (f"the state in {run.args.run_dir} holds the finite weights of step {saved}. " if saved is not None
               else "no state was saved. ")
            + "Lower --lr or raise --warmup-steps and train again.")


def agreed(run: Run, stop: bool) -> bool:
    """Every rank takes the same decision, or DDP deadlocks."""
    if run.world == 1:
        return stop
    flag_tensor = torch.tensor([float(stop)], device=run.device)
    dist.all_reduce(flag_tensor, op=dist.ReduceOp.MAX)
    return bool(flag_tensor.item())


def train(args) -> dict:
    """Train to --max-steps or the target, saving resumable state every few minutes; then finish()."""
    check_recipe(args)
    run = start_run(args)
    progress = run.progress
    start_step, run_start, last_save = progress["step"], time.perf_counter(), time.perf_counter()
    wall_before = progress["wall_seconds"]
    if start_step:
        progress["saved_step"] = start_step  # a resumed run's state on disk
    bar = tqdm(total=args.max_steps, initial=start_step, disable=run.rank != 0, dynamic_ncols=True, desc=args.model)
    step = start_step
    while step < args.max_steps:
        loss, predicted, logits, tgt_out = train_step(run, step)
        step += 1
        progress["examples"] += args.batch_size * args.grad_accum * run.world
        progress.update(step=step, wall_seconds=wall_before + time.perf_counter() - run_start)
        evaluating = step % args.eval_every == 0 or step == args.max_steps
        if step % 20 == 0 or evaluating:  # syncing with the device every step costs speed
            update_averages(run, loss, predicted, logits, tgt_out)
            check_finite(run, step)
            per_second = (step - start_step) * args.batch_size * args.grad_accum * run.world / (
                time.perf_counter() - run_start)
            bar.set_postfix(loss=f"{progress['running_loss']:.4f}", acc=f"{progress['running_acc']:.3f}",
                            ex_s=f"{per_second:.0f}")
            bar.update(step - bar.n)
        stop = evaluate_and_decide(run, step) if evaluating else False
        if args.max_minutes is not None and time.perf_counter() - run_start >= args.max_minutes * 60:
            stop = True
        stop = agreed(run, stop)
        if run.rank == 0 and (stop or time.perf_counter() - last_save >= args.save_every_minutes * 60):
            if weights_finite(run.model):  # a NaN state would overwrite the last one worth resuming
                progress["saved_step"] = step
                save_train_state(args.run_dir, run.model, run.optimizer, progress)
            last_save = time.perf_counter()
        if stop:
            break
    bar.close()
    # DDP's reducer holds gloo work: drop it before finish() destroys the process group, or its
    # destructor can run against a torn-down group at exit ("terminate called without an active exception")
    run.forward = run.ddp = None
    gc.collect()
    return finish(run)


def finish(run: Run) -> dict:
    """Save state and checkpoint, re-evaluate from the stored files, write the report."""
    args, progress = run.args, run.progress
    digests = [parameters_digest(run.model)]
    if run.world > 1:
        gathered = [None] * run.world
        dist.all_gather_object(gathered, digests[0])
        digests = gathered
    report = {}
    if run.rank == 0:
        save_train_state(args.run_dir, run.model, run.optimizer, progress)
        run.curves.close()
        report = write_checkpoint_and_report(run, len(set(digests)) == 1)
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return report


def write_checkpoint_and_report(run: Run, identical_across_ranks: bool) -> dict:
    """The checkpoint with its provenance, judged from its stored files, and the training report."""
    args, progress, device = run.args, run.progress, run.device
    argv = getattr(args, "argv", None) or ["--model", args.model]  # train(args) called without main
    recipe = {k: v for k, v in vars(args).items() if k != "argv"}
    provenance = {"command": shlex.join(["python", "-m", "training.train", *argv]), "git_commit": git_commit(),
                  "seed": args.seed, "steps": progress["step"], "examples_seen": progress["examples"],
                  "wall_seconds": round(progress["wall_seconds"], 1), "hardware": hardware(device),
                  "world_size": run.world, "recipe": recipe}
    if run.parent:
        provenance["init_from"] = run.parent
    config = save_checkpoint(run.model, args.out, run.tokenizer, args.weights_format, extra={"provenance": provenance},
                             group_size=args.group_size)
    stored_model, _, _ = load_checkpoint(args.out, device=device)  # judge what was written, not memory
    final = evaluate_examples(stored_model, run.tokenizer, run.held_out, device=device)
    final_summary = {"split": args.eval_split.partition("-")[0],
                     **{k: final[k] for k in ("accuracy", "correct", "total", "per_place")}}
    config["evaluation"] = {f"held_out_{args.eval_split}": final_summary}
    write_json(Path(args.out) / CONFIG_FILE, config)
    report = {"provenance": provenance, "architecture": config["architecture"], "parameters": config["parameters"],
              "weights_sha256": config["weights"]["sha256"], "curve": progress["curve"],
              "final_accuracy": final["accuracy"], "final_evaluation": final_summary,
              "ddp": {"world_size": run.world, "weights_identical_across_ranks": identical_across_ranks}}
    write_json(Path(args.run_dir) / "report.json", report)
    write_json(Path(args.out) / "training_report.json", report)
    log.info("final held-out accuracy from stored files: %.4f (%d steps)", final["accuracy"], progress["step"])
    return report


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.resume and not (Path(args.run_dir) / STATE_JSON).is_file():
        sys.exit(f"error: --resume given but {args.run_dir} holds no training state")
    try:
        train(args)
    except TrainingDiverged as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
