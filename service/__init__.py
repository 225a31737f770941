"""Digit recognition service: MNIST models behind an HTTP API that records every prediction."""

__version__ = "0.1.0"
