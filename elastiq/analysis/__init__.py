"""Analyses of models and their workloads: where time goes, numerics, resilience."""
