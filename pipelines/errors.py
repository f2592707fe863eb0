"""The errors a user can act on. The CLI, the page and the DAG tasks print their message as it
is, without a traceback: a message names the file, row, value or setting at fault and what to do.

Every module raises these (or a subclass); nothing here imports anything from koobill, so any
module can import it first."""

from __future__ import annotations


class KoobillError(Exception):
    """An error a user can act on; the CLI prints it without a traceback."""


class DataDirError(KoobillError):
    """The data dir does not exist or is not one (no ``landing/``)."""


class LockBusy(KoobillError):
    """Another koobill command holds the data dir's writer lock."""


def say_lock_wait(what: str, where: str, holder: str, wait_s: float) -> None:
    """Tell the user on stderr that ``what`` waits for the writer lock on ``where`` (the local
    lock file or the bucket's lease): a long wait is never silent. Callers say it once."""
    import sys

    held = f" held by {holder}" if holder else ""
    print(
        f"koobill: {what} waits for the lock on {where}{held} (up to {wait_s:g} s)",
        file=sys.stderr,
        flush=True,
    )


class SettingError(KoobillError, ValueError):
    """An environment variable (``KOOBILL_*``) whose value koobill cannot use."""
