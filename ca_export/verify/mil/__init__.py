"""A NumPy reference evaluator for Core ML ML programs, and parity against PyTorch with it."""
