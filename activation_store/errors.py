"""One exception type for everything a user can get wrong.

The CLI prints an ``ActstoreError`` as a single line and exits non-zero; anything
else is a bug and keeps its traceback (set ``ACTSTORE_DEBUG=1`` to see it)."""


class ActstoreError(Exception):
    """A problem with the user's input, environment or store, stated in one line."""


class StoreFormatError(ActstoreError):
    """The store was written by a different, incompatible actstore format."""


class ConfigConflictError(ActstoreError):
    """A group already holds a run made with a different model or configuration."""
