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


class OutputFileError(HistoclrError):
    """A file or folder cannot be written; the message names the path and the cause
    (``cause``: the operating system's words, e.g. "No space left on device")."""

    def __init__(self, path, reason: str, cause: str | None = None):
        self.path = str(path)
        self.reason = reason
        self.cause = cause
        super().__init__(f"{self.path}: {reason}")


class TrainingDiverged(HistoclrError):
    """The loss or the model's state became non-finite at ``step``."""

    def __init__(self, message: str, step: int):
        self.step = step
        super().__init__(message)
