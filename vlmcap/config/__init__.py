"""The configuration: its typed schema (schema.py), and loading it from YAML, presets, overrides and flags."""
