"""labd's version, in one place: the package, the build and ``capture_metadata`` read it."""

__version__ = "0.1.0"
