"""Scores: caption metrics for Korean, per segment, and how close a lower precision stays to float32."""
