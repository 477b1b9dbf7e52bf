"""Benchmarks: what users pay for tags, caching and orchestration, measured as interleaved ratios in one run."""
