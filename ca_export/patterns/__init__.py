"""What a Coordinate Attention block looks like in a traced graph."""

from ca_export.patterns.coordatt import Branch, CABlock, NoMatch, Rejection, find

__all__ = ["Branch", "CABlock", "NoMatch", "Rejection", "find"]
