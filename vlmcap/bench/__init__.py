"""Benchmarks behind `vlmcap bench`: each returns plain dicts that the CLI prints or writes as JSON."""
