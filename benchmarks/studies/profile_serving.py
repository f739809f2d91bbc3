"""Where single-question serving time goes: torch.profiler's top operators for each backend.

    python -m benchmarks.studies.profile_serving [--checkpoints checkpoints] [--threads 1]
"""
import argparse

from torch.profiler import ProfilerActivity, profile

from serving.service import QAService
from benchmarks.common import STUDY_RESULTS, environment, hardware_line
from models.task import generate

MODULE = "benchmarks.studies.profile_serving"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    service = QAService(args.checkpoints, torch_threads=args.threads, runtime="torch")
    questions = [q for q, _ in generate("interpolate", args.questions, seed=99)]
    sections = [f"Profile of {args.questions} single-question answers per backend; "
                f"{hardware_line(environment('cpu', MODULE, argv))}; {args.threads} torch thread(s).", ""]
    for name in service.models:  # every backend whose checkpoint loaded
        service.answer(questions[:2], name)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for question in questions:
                service.answer([question], name)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
        sections += [f"### {name}", "", "```", table.strip(), "```", ""]
    out = f"{args.out or STUDY_RESULTS}/profile_serving_cpu.md"
    with open(out, "w") as f:
        f.write("\n".join(sections) + "\n")
    print("\n".join(sections))


if __name__ == "__main__":
    main()
