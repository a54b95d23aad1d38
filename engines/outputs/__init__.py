"""What a night leaves beside its ledger: subtitle sidecars, the ledger as Parquet, CSV or WebDataset
(`vlmcap captions convert`), and the static pages (`vlmcap captions report`, the eval page)."""
