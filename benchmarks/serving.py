"""In-process serving latency of the shipped checkpoints, every loaded backend side by side:
single-question p50/p99 and batched answers/s, with the torch thread count the server uses; and
explanations (POST /explain's work): their p50/p95, and the single-question answers/s of the same
service alone and while one explanation after another runs beside it.

    python -m benchmarks.serving [--checkpoints checkpoints] [--threads 1] [--questions 100] [--device cpu]

On a GPU (`--device cuda`, the service's PLACEVALUE_DEVICE) the result is serving_gpu.json.
"""
import argparse
import threading
import time

from serving.service import QAService
from benchmarks.common import RESULTS, environment, percentile, save, summary
from models.task import generate


MODULE = "benchmarks.serving"


def answers_per_second(service, name, questions, seconds: float) -> float:
    """Closed-loop single questions from this thread for `seconds`."""
    answered, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        service.answer([questions[answered % len(questions)]], name)
        answered += 1
    return answered / (time.perf_counter() - start)


def explanation_costs(service, name, questions, args) -> dict:
    """Explanation latency, and what explanations running beside the answers cost them."""
    times = []
    for question in questions[:args.explanations]:
        start = time.perf_counter()
        service.explain(question, name)
        times.append((time.perf_counter() - start) * 1e3)
    alone = answers_per_second(service, name, questions, args.beside_seconds)
    stop = threading.Event()

    def explain_forever():
        i = 0
        while not stop.is_set():
            service.explain(questions[i % len(questions)], name)
            i += 1
    explainer = threading.Thread(target=explain_forever)
    explainer.start()
    try:
        beside = answers_per_second(service, name, questions, args.beside_seconds)
    finally:
        stop.set()
        explainer.join()
    print(f"{name:<12} explain p50 {percentile(times, 0.5):.0f} ms p95 {percentile(times, 0.95):.0f} ms; answers/s "
          f"{alone:.0f} alone, {beside:.0f} beside explanations", flush=True)
    return {"ms": {**summary(times), "p95": percentile(times, 0.95)}, "answers_per_second_alone": alone,
            "answers_per_second_beside": beside}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (gunicorn.conf.py: cores // workers)")
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--batch-sizes", default="8,64,256")
    parser.add_argument("--batch-repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where torch runs the models (the service's PLACEVALUE_DEVICE)")
    parser.add_argument("--explanations", type=int, default=10, help="explanations timed per backend (0: none)")
    parser.add_argument("--beside-seconds", type=float, default=5.0,
                        help="how long answers/s is measured alone and beside explanations")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    service = QAService(args.checkpoints, torch_threads=args.threads, device=args.device,
                        runtime="torch")  # the models themselves, float32
    names = tuple(service.models)  # the backends whose checkpoints loaded
    questions = [q for q, _ in generate("interpolate", max(args.questions, 256), seed=4242)]
    for name in names:  # warm-up
        service.answer(questions[:8], name)
    single = {n: [] for n in names}
    for i, question in enumerate(questions[:args.questions]):
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            service.answer([question], name)
            single[name].append((time.perf_counter() - start) * 1e3)
    result = {"environment": environment(args.device, MODULE, argv), "torch_threads": args.threads, "single_ms": {}, "batched": {}}
    for name in names:
        result["single_ms"][name] = {**summary(single[name]), "p99": percentile(single[name], 0.99)}
    for size in map(int, args.batch_sizes.split(",")):
        times = {n: [] for n in names}
        for r in range(args.batch_repeats):
            for name in (names if r % 2 == 0 else names[::-1]):
                start = time.perf_counter()
                service.answer(questions[:size], name)
                times[name].append(time.perf_counter() - start)
        result["batched"][size] = {n: {"seconds": summary(times[n]),
                                       "answers_per_second": size / summary(times[n])["median"]} for n in names}
    if args.explanations:
        result["explain"] = {n: explanation_costs(service, n, questions, args) for n in names}
    for name in names:
        s = result["single_ms"][name]
        batched = ", ".join(f"batch {b}: {result['batched'][b][name]['answers_per_second']:.0f}/s" for b in result["batched"])
        print(f"{name:<12} single p50 {s['median']:.1f} ms p99 {s['p99']:.1f} ms; {batched}")
    save("serving_gpu" if args.device == "cuda" else "serving_cpu", result, args.out or RESULTS)


if __name__ == "__main__":
    main()
