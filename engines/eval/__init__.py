"""Evaluation: a labelled manifest captioned through the batch path and scored (`vlmcap eval`), and its page."""
