"""Parity: metrics, the tolerance table, and the gates that compare artifacts with PyTorch."""
