"""One batch run: selection and resume, the run core, the local and Ray drivers, records, the JSONL ledger,
its lock, sidecars and dedup; `vlmcap batch` and `vlmcap eval` are its consumers."""
