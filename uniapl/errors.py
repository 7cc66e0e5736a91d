"""Errors a user can cause and fix. The CLI prints them as one clear message, without a traceback."""


class UniaplError(Exception):
    """A bad config, data row, path or model: the message names the field, file or line."""


class ConfigError(UniaplError):
    """A config field has a wrong type or a value outside the allowed ones."""


class DataError(UniaplError):
    """A data file is missing, empty, or has a row that cannot be used."""


class IntegrityError(UniaplError):
    """A saved file is missing, truncated or changed since it was written (its checksum differs)."""


class UniaplWarning(UserWarning):
    """A setting that works but is probably not what the user wants (e.g. emulated bf16)."""
