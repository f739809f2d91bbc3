"""Side-by-side benchmarks of every registered backend; `make bench` measures what REPORT.md shows."""
