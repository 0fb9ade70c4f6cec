"""Validation of fine-tuning data files: formats, errors, duplicates, leakage, tokens, a score."""
