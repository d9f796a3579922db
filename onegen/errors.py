"""One base for every error whose message is meant for a user.

The CLI (onegen/__main__.py) and the app (onegen/ui) turn a `OneGenError` into its message in one
place each; anything else is a bug and is reported as one. Subclasses keep their historical
built-in bases (ValueError, RuntimeError, ...) so callers that catch those still work.
"""
from __future__ import annotations


class OneGenError(Exception):
    """A problem the user can fix (bad input, a missing file, a refused index); str(e) says how."""
