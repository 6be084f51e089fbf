"""Evaluation: benchmarks (eval/bench) and, later, lmms-eval tasks. Imports the packages; defines no model code."""
