"""Errors a user can act on. The CLI prints them as one line and exits with status 2."""


class SpkidError(Exception):
    """Base class: the message names the file or parameter at fault."""


class ParamsError(SpkidError):
    """params.yaml is malformed, has an unknown key, or a value out of range."""


class DataError(SpkidError):
    """Input data (audio, features, JSON, archives) is missing or malformed."""
