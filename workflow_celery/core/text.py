"""Text that came from user code or user input, made safe to store.

Exception messages, tracebacks, pause and cancel reasons and the like are
written to the database as they are given. Some strings cannot be stored:
PostgreSQL refuses NUL characters in text, and no driver can encode a lone
surrogate (what ``os.fsdecode`` or ``surrogateescape`` leave behind) as UTF-8.
Some objects cannot even be turned into a string: a ``__str__`` may raise or
return something else. Recording a failure must never fail because of what the
failure carries, so every such text goes through :func:`storable_text` first.
"""

from __future__ import annotations

MAX_REASON_LENGTH = 2000
"""Characters kept of a pause, cancel or delete reason."""
MAX_NAME_LENGTH = 500
"""Characters kept of a name taken from user code (an exception type, a hook)."""

TRUNCATION_MARK = " [... {} characters cut]"


def storable_text(value: object, *, limit: int) -> str:
    """``value`` as a string any store accepts: at most ``limit`` characters, valid UTF-8, no NUL.

    A NUL becomes ``\\x00`` and a lone surrogate its ``\\udcXX`` escape, so
    nothing is silently lost; text over the limit keeps its head and says how
    much was cut. Never raises: an object whose ``__str__`` fails is described
    by its type instead.
    """
    text = _as_str(value)
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        cut = len(text) - limit
        mark = TRUNCATION_MARK.format(cut)
        text = text[: max(limit - len(mark), 0)] + mark
    return text


def _as_str(value: object) -> str:
    if type(value) is str:
        return value
    try:
        text = str(value)
        if type(text) is str:
            return text
        return str.__str__(text)
    except Exception:
        pass
    try:
        return f"<unprintable {type(value).__qualname__} object>"
    except Exception:
        return "<unprintable object>"


MAX_FOREIGN_ID_LENGTH = 512
"""Characters a foreign id may have: it is indexed, and an index entry has a size limit."""


def check_foreign_id(foreign_id: object, *, workflow: str) -> None:
    """Refuse a foreign id no store can keep and find again: raises ``ValueError`` saying why.

    It must be a non-empty ``str`` of at most ``MAX_FOREIGN_ID_LENGTH``
    characters, without NUL characters or lone surrogates (PostgreSQL text
    and UTF-8 have no room for them). It is an identifier, so it is refused
    rather than altered.
    """
    if not isinstance(foreign_id, str) or not foreign_id:
        raise ValueError(f"foreign_id must be a non-empty string, got {foreign_id!r} (workflow={workflow})")
    if len(foreign_id) > MAX_FOREIGN_ID_LENGTH:
        raise ValueError(
            f"foreign_id is {len(foreign_id)} characters long; at most {MAX_FOREIGN_ID_LENGTH} are allowed "
            f"(workflow={workflow})"
        )
    if "\x00" in foreign_id:
        raise ValueError(f"foreign_id {foreign_id!r} contains a NUL character (workflow={workflow})")
    if not foreign_id.isascii():
        try:
            foreign_id.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"foreign_id {foreign_id!r} is not valid Unicode (it contains a lone surrogate) (workflow={workflow})"
            ) from None
