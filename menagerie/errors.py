"""User-facing errors: each carries one sentence that says what is wrong and how to fix it."""


class MenagerieError(Exception):
    """A user mistake or a missing input; reported as one message, never a traceback."""


class ConfigError(MenagerieError):
    """The recipe configuration is malformed (names the recipe, the key and what was expected)."""


class MissingInputError(MenagerieError):
    """A model or dataset is not available offline (names it and how to provide it)."""
