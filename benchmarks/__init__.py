"""Side-by-side benchmarks of every registered backend; `make bench` regenerates RESULTS.md."""
