"""Benchmarks: each module is `python -m eval.bench.<name>`, prints a table and writes eval/results/<name>.{json,md}."""
