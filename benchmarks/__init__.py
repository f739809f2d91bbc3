"""Side-by-side Transformer vs MemSizer benchmarks; `make bench` regenerates RESULTS.md."""
