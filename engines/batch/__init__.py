"""One batch run (the night): selection and resume, the run core, the local and Ray drivers, records,
the JSONL ledger, its lock and dedup; `vlmcap batch`, the API and `vlmcap eval` run through it."""
