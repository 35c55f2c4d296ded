"""The package version, in a module of its own so that every module can read
it without importing the package (and torch) first.
"""

__version__ = "0.1.0"
