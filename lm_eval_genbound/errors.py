"""User-facing error type.

    >>> from lm_eval_genbound.errors import GenboundError
    >>> raise GenboundError("losses contains 3 NaN values; per-token losses must be finite")
    Traceback (most recent call last):
    ...
    lm_eval_genbound.errors.GenboundError: losses contains 3 NaN values; per-token losses must be finite

Every mistake a user can make (bad arguments, bad files, bad data) raises ``GenboundError``;
the CLI turns it into ``error: <message>`` on stderr and exit code 2. Anything else is a bug.
"""


class GenboundError(ValueError):
    """A user error: bad input, bad file, or an impossible request. The message is one line."""
