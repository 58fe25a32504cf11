"""The one error the converters raise for inputs they cannot convert faithfully."""
from __future__ import annotations


class ConversionError(ValueError):
    """A model file cannot be converted as it is; the message names the file and layer and what to do.

    Raised instead of returning a model that might be silently wrong: unknown layer types, weights
    that do not fit the network definition, truncated or foreign files.
    """
