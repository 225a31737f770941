"""Helpers the tests share: waiting on a condition, calling the API (one module a concern)."""
