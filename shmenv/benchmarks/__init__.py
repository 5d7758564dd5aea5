"""Benchmark helpers: games and workloads used to measure shmenv itself."""
