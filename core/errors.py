"""User-facing errors.

Anything a user can fix (a bad path, a wrong key, a malformed file) raises a ``UserError``
subclass; entry points turn it into one ``error: ...`` line on stderr and exit code 2
(see ``core.cli.run``). Programming errors keep their tracebacks.
"""


class UserError(Exception):
    """An error caused by input the user controls; printed as one line, no traceback."""


class ConfigError(UserError):
    """A config file or ``--override`` entry is invalid."""


class DataError(UserError):
    """A data file is missing, empty or does not follow the expected schema."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable or belongs to another model or dataset."""


def read_user_file(path, error: type[UserError], what: str = "file") -> bytes:
    """The bytes of a user-named file; a missing, non-regular or unreadable file raises ``error``
    with one line naming it (every reader of user files starts this way)."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise error(f"{path}: {what} not found")
    if not path.is_file():
        raise error(f"{path}: not a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read the file ({exc.strerror or exc})") from None
