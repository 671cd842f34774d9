"""The project's exceptions. Each subclasses the built-in kind a caller would catch anyway."""

from __future__ import annotations


class ConfigError(ValueError):
    """An unknown config name, an unknown key, or a value of the wrong type."""


class DownloadError(OSError):
    """A checkpoint could not be made available.

    ``attempts`` lists ``(url, what happened)`` for every source tried, in order; the message
    repeats them and says what the user can do. ``report`` is the same account without the
    advice, and ``hints`` the advice alone, so that a table of several failed files can print each
    file's report and the advice once.
    """

    def __init__(self, message: str, *, key: str | None = None, path=None, attempts=(), report: str | None = None,
                 hints: tuple[str, ...] = ()):
        super().__init__(message)
        self.key = key
        self.path = path
        self.attempts = list(attempts)
        self.report = report
        self.hints = tuple(hints)

    def __str__(self) -> str:  # OSError's own __str__ would prepend an errno
        return self.args[0]


class ChecksumError(DownloadError):
    """A file's bytes are not the ones pinned in the registry (or announced by the server)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint file holds other tensors than the architecture expects (a wrong file)."""


class ImageError(ValueError):
    """A file or array that cannot be used as an image (not an image, wrong shape or range)."""


class ClassLabelError(ValueError):
    """An ImageNet class label that is neither an index 0-999 nor a class name."""


class DegradationError(ValueError):
    """A degradation that cannot be built as asked (unknown name, a factor that does not divide the
    image size, a mask of the wrong shape, ...), or an input of the wrong size for an operator."""


class SamplingError(ValueError):
    """Arguments of the DDRM sampler that cannot work together (a step count out of range, a
    classifier without classes, a measurement of the wrong size, ...)."""


class ModelInputError(ValueError):
    """A network was called with inputs of the wrong shape, or without a class label it needs."""


class ArgumentError(ValueError):
    """An argument that cannot work here, found before anything is downloaded or loaded: a device
    PyTorch cannot use on this machine, an output folder that is a file or cannot be written, a
    seed or a count out of range, ... (see :mod:`ddrm_helpers.validate`)."""


class OutDirError(ArgumentError):
    """The evaluation folder (``--out``) cannot be used as it is: a link, a folder or another file
    where one of its files belongs, a file with several hard links or of another owner, files of
    something else in a folder without ``run.json``, or another evaluation running there
    (:mod:`ddrm_helpers.outdir`). Nothing was written; the message says what to remove or give."""


class OutDirWriteError(OSError):
    """Writing into the evaluation folder failed (the disk is full, it became read-only, an I/O
    error). What was recorded before stays; the message says what to do, and running the same
    command again resumes."""

    def __str__(self) -> str:  # OSError's own __str__ would prepend an errno
        return self.args[0]


class RunCancelled(RuntimeError):
    """A restoration stopped on purpose (the app's Cancel button), raised from the sampler's callback."""
