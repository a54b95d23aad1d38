"""Benchmarks that run a bundle: the batch schedules, LLM decode, long videos, and the stages against the roofline."""
