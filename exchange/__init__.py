"""A dynamic, allowance-based carbon exchange engine."""

__version__ = "0.1.0"
