"""User-facing errors: one clear line, no traceback wall."""


class HistoclrError(Exception):
    """An error caused by input or configuration; the CLI prints it as one line and exits 2."""


class ConfigError(HistoclrError, ValueError):
    """A configuration value or key is invalid."""


class InputFileError(HistoclrError):
    """A file given as input cannot be used; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
