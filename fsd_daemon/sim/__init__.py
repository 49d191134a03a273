"""Simulated rollout servers and jobs for the demo, the tests and the benchmarks."""
