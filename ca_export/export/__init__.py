"""Emitters: one module per artifact format."""
