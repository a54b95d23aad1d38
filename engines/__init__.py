"""Running a bundle (`vlmcap batch`, `eval`, `bench`, `captions convert`), one subpackage per role.

- `model/`: a bundle's vision and LLM engines behind one `Captioner`, and the guards on what they write;
- `batch/`: one batch run: which videos, the run core, the local and Ray drivers, the JSONL ledger;
- `datasets/`: the ledger converted to Parquet, CSV or WebDataset (`vlmcap captions convert`);
- `bench/`: the benchmarks that run a bundle (`vlmcap bench batch|llm|long|stages`).

docs/ARCHITECTURE.md maps every file.
"""
