"""Transitional: weight loading lives in `eva.weights_io`. Only eva/train/loop.py still imports
`weights_fingerprint` from here; delete this file once it imports it from `eva.weights_io`."""

from eva.weights_io import weights_fingerprint

__all__ = ["weights_fingerprint"]
