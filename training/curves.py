"""Learning curves as TensorBoard event files, where the field looks at them (`tensorboard --logdir runs`).

Each evaluation point of a run (training.train's curve: loss, accuracies, learning rate) becomes
scalars at its step in <run dir>/tensorboard. The report's JSON curve stays the record; these files
are a view of it, so a run trained before they existed can have its view written from its report.
"""
from pathlib import Path

from tensorboardX import SummaryWriter

EVENTS_DIR = "tensorboard"
# curve key -> TensorBoard tag
SCALARS = {"loss": "train/loss", "train_accuracy": "train/exact_match", "eval_accuracy": "held_out/accuracy",
           "eval_worst_place": "held_out/worst_place", "lr": "train/lr", "examples": "train/examples"}


def curve_writer(run_dir, resumed_at: int = 0) -> SummaryWriter:
    """A writer for the run's events. A run resumed from its state at step `resumed_at` has TensorBoard
    drop the points an interrupted run wrote after that state was saved (they are written again)."""
    # the suffix keeps a resumed writer's file apart from one started in the same second
    return SummaryWriter(logdir=str(Path(run_dir) / EVENTS_DIR), purge_step=resumed_at + 1 if resumed_at else None,
                         filename_suffix=f".from{resumed_at}" if resumed_at else "")


def write_point(writer: SummaryWriter, point: dict) -> None:
    for key, tag in SCALARS.items():
        if point.get(key) is not None:
            writer.add_scalar(tag, point[key], global_step=point["step"])
    writer.flush()


def write_curve(run_dir, curve: list[dict]) -> Path:
    """Every point of a finished run's curve, for a run whose events were never written."""
    with curve_writer(run_dir) as writer:
        for point in curve:
            write_point(writer, point)
    return Path(run_dir) / EVENTS_DIR
