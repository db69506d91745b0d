"""Typed errors of zsad_core.

Every error that bad input can cause has its own class and a short machine-readable ``reason`` so that the
streaming layer can put the reason on a dead-letter message without parsing exception text.
"""


class ZsadError(Exception):
    """Base class of all errors raised on purpose by zsad_core."""

    reason = "error"


class ImageError(ZsadError, ValueError):
    """An image could not be accepted; ``reason`` says why in one word."""

    reason = "bad_image"


class EmptyImageError(ImageError):
    """The payload has no bytes."""

    reason = "empty"


class UnsupportedImageError(ImageError):
    """The payload is not an image in an accepted format (JPEG or PNG by default)."""

    reason = "not_an_image"


class TruncatedImageError(ImageError):
    """The payload starts like an image but is cut short, so decoding would invent pixels."""

    reason = "truncated"


class ImageTooLargeError(ImageError):
    """The payload or its declared dimensions exceed the configured limits (decompression-bomb guard)."""

    reason = "too_large"


class WeightsUnavailableError(ZsadError, RuntimeError):
    """Backbone or prompt weights could not be found or fetched; the message says how to supply a file."""

    reason = "weights_unavailable"


class IncompatibleWeightsError(ZsadError, ValueError):
    """Weights exist but do not belong to this model (other backbone, taps, shape or a wrong hash)."""

    reason = "incompatible_weights"
