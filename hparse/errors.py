"""Exceptions with messages a user can act on."""


class HParseError(Exception):
    """Base class for hparse's own errors."""


class DataError(HParseError):
    """A dataset, image or label file is missing, unreadable or inconsistent."""


class ImageTooLargeError(DataError):
    """An image exceeds the pixel limit (see ``hparse.io.image.MAX_PIXELS``)."""


class ConfigError(HParseError):
    """A configuration is malformed or names something unknown."""


class UnsupportedOutput(HParseError):
    """The model cannot give an output asked for (e.g. class probabilities, ``--probs``, from an instance model):
    the request is refused as a whole, not image by image."""
