"""``workflow-celery dead-letters``: list, show and discard what workers could not deliver to any task.

workflow-celery -A examples.orders dead-letters list [--queue Q] [--json]
workflow-celery -A examples.orders dead-letters show ID [--json | --raw]      # or a unique prefix of the id
workflow-celery -A examples.orders dead-letters discard ID [ID ...]
workflow-celery -A examples.orders dead-letters discard --all [--queue Q]

Dead letters live in the stores of the app's workflows; every command reads
all of them.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

from celery import Celery

from ..core.dead_letters import DeadLetter
from ..core.ports import RecordStore, one_per_database
from .common import CliError, find_workflows, not_negative, positive

SHOWN_BODY_BYTES = 4096
"""Bytes of a body ``show`` prints; ``--raw`` writes all of them."""
DISCARD_PAGE = 500


def add_commands(sub: Any) -> None:
    """Add ``dead-letters list|show|discard`` to the command's sub-parsers."""
    dl = sub.add_parser("dead-letters", help="list, show and discard messages no task could be given")
    dsub = dl.add_subparsers(dest="dead_letters_command", required=True, metavar="COMMAND")
    ls = dsub.add_parser("list", help="list dead letters, newest first")
    ls.add_argument("--queue", help="only those from this queue")
    ls.add_argument("--limit", type=positive, default=25, help="dead letters per page")
    ls.add_argument("--offset", type=not_negative, default=0, help="dead letters to skip")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list, needs_app=True)
    show = dsub.add_parser("show", help="one dead letter with its headers and body")
    show.add_argument("id", help="a dead letter id, or enough of its start to name one")
    output = show.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="as JSON, the body in base64")
    output.add_argument("--raw", action="store_true", help="write the body's bytes to stdout, nothing else")
    show.set_defaults(func=cmd_show, needs_app=True)
    discard = dsub.add_parser("discard", help="delete dead letters")
    which = discard.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], metavar="ID", help="dead letter ids, or unique prefixes")
    which.add_argument("--all", action="store_true", help="every dead letter (of --queue)")
    discard.add_argument("--queue", help="with --all: only those from this queue")
    discard.set_defaults(func=cmd_discard, needs_app=True)


def _stores(app: str | Celery) -> list[RecordStore]:
    return one_per_database(wf.store for wf in find_workflows(app).values())


def _find(stores: list[RecordStore], prefix: str) -> tuple[RecordStore, DeadLetter]:
    if not prefix:
        raise CliError("give a dead letter id (or a unique prefix of one)")
    found = [(store, letter) for store in stores for letter in store.dead_letters(id_prefix=prefix, limit=2)]
    exact = [(store, letter) for store, letter in found if letter.id == prefix]
    if exact:
        return exact[0]
    if not found:
        raise CliError(f"dead letter {prefix!r} not found")
    if len(found) > 1:
        count = sum(store.count_dead_letters(id_prefix=prefix) for store in stores)
        raise CliError(f"dead letter id prefix {prefix!r} matches {count} dead letters: give more of the id")
    return found[0]


def _plural(count: int) -> str:
    return f"{count} dead letter{'' if count == 1 else 's'}"


def cmd_list(args: argparse.Namespace) -> int:
    stores = _stores(args.app)
    wanted = args.offset + args.limit
    letters = [letter for store in stores for letter in store.dead_letters(queue=args.queue, limit=wanted)]
    letters.sort(key=lambda letter: (letter.received_at, letter.id), reverse=True)
    rows = [_summary(letter) for letter in letters[args.offset : wanted]]
    total = sum(store.count_dead_letters(queue=args.queue) for store in stores)
    if args.json:
        print(json.dumps({"total": total, "offset": args.offset, "limit": args.limit, "dead_letters": rows}, indent=2))
        return 0
    cols = ["received_at", "id", "queue", "bytes", "reason"]
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip())
    print(_count_line(total, args.offset, len(rows), args.queue))
    return 0


def _count_line(total: int, offset: int, shown: int, queue: str | None) -> str:
    letters = _plural(total) + (f" from queue {queue}" if queue else "")
    if shown == total:
        return f"({letters})"
    if shown == 0:
        return f"(none of {letters} from --offset {offset})"
    more = f"; --offset {offset + shown} for more" if offset + shown < total else ""
    return f"({offset + 1}-{offset + shown} of {letters}{more})"


def headers_object(text: str) -> dict[str, Any] | None:
    """A dead letter's headers as a JSON object, or None when its text is not one.

    Headers are kept as text (``DeadLetter.headers``): JSON when the message
    had a mapping of them, cut at ``MAX_HEADERS_TEXT`` characters when long,
    or the ``repr`` of something else. ``--json`` gives the object when there
    is one, and the text always (``headers_text``).
    """
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def cmd_show(args: argparse.Namespace) -> int:
    _, letter = _find(_stores(args.app), args.id)
    if args.raw:
        sys.stdout.buffer.write(letter.body)
        sys.stdout.buffer.flush()
        return 0
    if args.json:
        document = {
            **_summary(letter),
            "content_type": letter.content_type,
            "content_encoding": letter.content_encoding,
            "headers": headers_object(letter.headers),
            "headers_text": letter.headers,
            "body_base64": base64.b64encode(letter.body).decode("ascii"),
        }
        print(json.dumps(document, indent=2))
        return 0
    for label, value in [
        ("id", letter.id),
        ("queue", letter.queue),
        ("received_at", letter.received_at.isoformat()),
        ("worker", letter.worker),
        ("reason", letter.reason),
        ("content_type", letter.content_type),
        ("content_encoding", letter.content_encoding),
        ("headers", letter.headers),
    ]:
        print(f"{label + ':':<18}{value}")
    shown = letter.body[:SHOWN_BODY_BYTES]
    print(f"{'body:':<18}{_plural_bytes(len(letter.body))}")
    for line in _printable(shown).split("\n"):
        print(f"  {line}")
    if len(letter.body) > len(shown):
        print(f"  ... {len(letter.body) - len(shown)} more bytes (--raw writes them all)")
    return 0


def cmd_discard(args: argparse.Namespace) -> int:
    stores = _stores(args.app)
    if args.queue and not args.all:
        raise CliError("--queue goes with --all; ids name their dead letters already")
    discarded = 0
    if args.all:
        for store in stores:
            while page := store.dead_letters(queue=args.queue, limit=DISCARD_PAGE):
                discarded += store.discard_dead_letters([letter.id for letter in page])
    else:
        # Every id is checked before anything is deleted: a typo discards nothing.
        targets = [_find(stores, prefix) for prefix in args.ids]
        for store, letter in targets:
            discarded += store.discard_dead_letters([letter.id])
    print(f"discarded {_plural(discarded)}")
    return 0


def _summary(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "queue": letter.queue,
        "received_at": letter.received_at.isoformat(),
        "worker": letter.worker,
        "bytes": len(letter.body),
        "reason": " ".join(letter.reason.split()),
    }


def _plural_bytes(count: int) -> str:
    return f"{count} byte{'' if count == 1 else 's'}"


def _printable(body: bytes) -> str:
    """The body as text a terminal shows safely: UTF-8 where it is, escapes for everything else."""
    text = body.decode("utf-8", "backslashreplace")
    return "".join(
        c if c in "\n\t" or (c.isprintable() and c != "\x7f") else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
