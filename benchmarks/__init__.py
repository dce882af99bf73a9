"""Performance and search-quality benchmarks (not tests): ratios measured side by side in one run."""
