"""OneGen Explorer: see, teach and inspect single-pass retrieval-in-generation."""
__version__ = "0.1.0"
