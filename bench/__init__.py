"""Benchmarks (`make bench`): worker efficiency against the bare model loop, batching gain, I/O overlap, and the API.

Every figure is a ratio or a latency measured in one run on one machine, written with that machine's
description to bench/results/*.json and summarised as a Markdown table (README, "Benchmarks").
"""
