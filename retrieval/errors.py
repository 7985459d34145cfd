"""Typed errors. Messages carry the values involved and the fix.

The library raises these; the CLI turns them into one-line messages and exit code 1.
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class for every error this package raises on purpose."""


class AudioError(RetrievalError):
    """A file could not be decoded, or holds no usable audio."""


class EncoderError(RetrievalError):
    """An encoder could not be built, loaded or run."""


class UnknownNameError(RetrievalError, KeyError):
    """A name (encoder, pooling, post-processing) is not one of the valid choices."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InputError(RetrievalError):
    """A user-supplied value (shape, sample rate, option) is out of range."""


class ChoiceError(UnknownNameError, InputError):
    """A value is not one of an option set's choices (``retrieval.options``); the message lists them.

    Attributes:
        option: what the value is (``pooling``, ``--index-type``).
        value: the value given.
        choices: the valid values.
    """

    def __init__(self, option: str, value: object, choices: tuple[str, ...]) -> None:
        super().__init__(f"unknown {option} {value!r}; choose one of: {', '.join(choices)}")
        self.option, self.value, self.choices = option, value, tuple(choices)

    def __reduce__(self) -> tuple:  # picklable across worker processes despite the 3-argument init
        return type(self), (self.option, self.value, self.choices)


class WeightsNotFoundError(EncoderError):
    """A checkpoint is not available locally and cannot be downloaded."""


class RecipeMismatchError(RetrievalError):
    """Vectors made with one recipe were about to be mixed with another."""


class IndexNotFoundError(RetrievalError):
    """No index at the given path, or no unique default index."""


class StoreError(RetrievalError):
    """An index's files could not be opened or written: damaged, locked by another process, or a full disk."""


class IndexLockedError(StoreError):
    """Another process holds the index's DuckDB file (DuckDB allows one writer, and no readers beside it)."""
