"""ca-export: find Coordinate Attention blocks, rewrite them exactly, export and verify."""

__version__ = "0.1.0"
