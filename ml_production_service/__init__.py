"""ML Production Service: a tabular classifier served over HTTP."""

__version__ = "0.1.0"
