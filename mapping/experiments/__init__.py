"""Experiments shared by the book's notebooks and ``python -m mapping.reproduce``."""
