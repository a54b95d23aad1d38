"""The captions ledger as a dataset: Parquet, CSV or WebDataset shards (`vlmcap captions convert`)."""
