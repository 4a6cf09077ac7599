"""Errors a user can act on. The CLI prints them as one line and exits with status 2."""


class SpkidError(Exception):
    """Base class: the message names the file or parameter at fault."""

    # Raised by every rank of a torchrun job at once (a decision rank 0 broadcast): the
    # CLI prints it on rank 0 only, so the user reads it once.
    every_rank = False


class ParamsError(SpkidError):
    """params.yaml is malformed, has an unknown key, or a value out of range."""


class DataError(SpkidError):
    """Input data (audio, features, JSON, archives) is missing or malformed."""


class StaleInputError(DataError):
    """An input that spkid itself writes is missing, from an older spkid, or out of step
    with what it was made from. The library does not know the pipeline: it names the
    output (`output`, a path, or None when it cannot tell) and the command layer says
    which step makes it again."""

    def __init__(self, message: str, output=None):
        super().__init__(message)
        self.output = output


class WorldSizeChanged(DataError):
    """A checkpoint to resume was written by a run of another number of ranks."""

    every_rank = True
