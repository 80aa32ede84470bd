"""One exception tree for gmmnet.

Every error a user can cause is a :class:`GmmnetError` subclass with its own
exit code; the CLI prints ``gmmnet: error: <message>`` on one line and exits
with that code (tracebacks only with ``--debug``).
"""

from __future__ import annotations


class GmmnetError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(GmmnetError):
    """Bad command-line arguments or option values."""

    exit_code = 2


class InputFileError(GmmnetError):
    """A file is missing, unreadable, of an unknown kind, corrupt or too large."""

    exit_code = 3


class UnsafeFileError(GmmnetError):
    """A file asks for something gmmnet refuses to do (code execution, paths outside its folder)."""

    exit_code = 4


class UnsupportedModelError(GmmnetError):
    """A model of a class, structure or ONNX pattern gmmnet cannot convert."""

    exit_code = 5


class NotFittedError(GmmnetError):
    """An estimator that has not been fitted."""

    exit_code = 6


class InvalidModelError(GmmnetError):
    """A model whose numbers are invalid: non-finite, singular covariance, bad weights, shapes."""

    exit_code = 7


class DataError(GmmnetError):
    """Scoring data of the wrong shape or content."""

    exit_code = 8


class OutputExistsError(GmmnetError):
    """The output exists (use --force) or would overwrite an input."""

    exit_code = 9


class OutputFileError(GmmnetError):
    """An output cannot be written: its folder is missing, not writable, or the disk is full."""

    exit_code = 10


class ResourceLimitError(GmmnetError):
    """A model or data file would need more memory than the limit allows (--max-memory raises it)."""

    exit_code = 11


class PrecisionWarning(UserWarning):
    """float32 arithmetic would lose more accuracy than gmmnet promises."""


EXIT_CODES = {
    cls.__name__: cls.exit_code
    for cls in (
        GmmnetError,
        UsageError,
        InputFileError,
        UnsafeFileError,
        UnsupportedModelError,
        NotFittedError,
        InvalidModelError,
        DataError,
        OutputExistsError,
        OutputFileError,
        ResourceLimitError,
    )
}
"""Exit code of every error class (plus 130 for Ctrl-C, documented in docs/cli.md)."""

#: Exit codes that are not error classes.
OTHER_EXIT_CODES = {
    130: "interrupted (Ctrl-C); no partial output is left",
    141: "standard output closed early (piped into `head`, say); the command stops quietly",
}


def exit_code_table() -> str:
    """The Markdown exit-code table of docs/cli.md (a test checks the page against it)."""
    classes = {cls.__name__: cls for cls in GmmnetError.__subclasses__()} | {"GmmnetError": GmmnetError}
    rows = ["| code | error class | meaning |", "|---:|---|---|", "| 0 | | success |"]
    for name, code in sorted(EXIT_CODES.items(), key=lambda kv: kv[1]):
        doc = (classes[name].__doc__ or "").strip().splitlines()[0]
        if name == "GmmnetError":
            doc = "any other gmmnet error; also an internal error (a bug: rerun with --debug and report it)"
        rows.append(f"| {code} | `{name}` | {doc} |")
    rows += [f"| {code} | | {text} |" for code, text in OTHER_EXIT_CODES.items()]
    return "\n".join(rows) + "\n"
