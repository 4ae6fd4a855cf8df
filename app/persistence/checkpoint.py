"""WAL checkpoints of the SQLite store, off the commit path.

In WAL mode a commit appends its pages to the ``-wal`` file; a checkpoint copies them back
into the database file and fsyncs it. By default the connection that commits runs one
itself (PASSIVE) whenever its commit leaves 1,000 pages or more in the WAL
(``PRAGMA wal_autocheckpoint``): about one history commit in 170 then waits ~15 ms for it,
some 90 us a commit on average. The store turns automatic checkpoints off on its
connections and leaves them to a ``WalCheckpointer``, a thread with a connection of its
own that

* runs a PASSIVE checkpoint (copies every page no reader still needs; never waits for, nor
  blocks, a reader or a writer) after every ``every_commits`` transactions of the store's
  history writer (which it runs within ``writing()``), and at least every
  ``interval_seconds`` (for the other writes: claims, the API's);
* when the WAL still holds ``limit_pages`` pages or more after that (writers kept
  appending while it ran, so the WAL never went back to its start; or a reader holds an
  old snapshot), runs a RESTART checkpoint: it holds new writers while it copies the rest
  and waits, up to ``busy_seconds``, for readers of older snapshots to finish, so that the
  next writer starts the WAL from its beginning again. The history writer waits for it on
  a lock (SQLite's busy handler polls: a writer committing back to back would starve the
  checkpoint of the write lock). The WAL thus stays under
  ``limit_pages`` plus what is committed while one PASSIVE checkpoint runs (a few ms: some
  tens of history batches); a reader that keeps a snapshot longer than ``busy_seconds``
  makes the try fail (logged) and the next round tries again, each try holding writers for
  at most ``busy_seconds``;
* on ``close()``, runs a TRUNCATE checkpoint: the WAL file is left empty.

A checkpoint that fails is logged and tried again on the next round; writes never see it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("app.persistence.checkpoint")

#: Commits between two PASSIVE checkpoints (a history commit adds ~6 pages).
EVERY_COMMITS = 100
#: Longest time between two checkpoints while the store is open.
INTERVAL_SECONDS = 1.0
#: WAL size (pages of 4 KiB: 16 MiB) past which a RESTART checkpoint holds writers.
LIMIT_PAGES = 4000
#: Longest a RESTART or TRUNCATE checkpoint waits for readers (and holds writers).
BUSY_SECONDS = 1.0


class WalCheckpointer:
    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        every_commits: int = EVERY_COMMITS,
        interval_seconds: float = INTERVAL_SECONDS,
        limit_pages: int = LIMIT_PAGES,
        busy_seconds: float = BUSY_SECONDS,
    ) -> None:
        """``connect()`` opens a DB-API connection to the database, in autocommit mode."""
        self._connect = connect
        self._every = every_commits
        self._interval = interval_seconds
        self._limit = limit_pages
        self._busy_ms = int(busy_seconds * 1000)
        self._commits = 0
        self._writer = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        #: Checkpoints run, by mode (what the tests look at).
        self.runs = {"PASSIVE": 0, "RESTART": 0, "TRUNCATE": 0}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)
        self._thread.start()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around each transaction of the (one) history writer: held off by a RESTART
        checkpoint, and counted when it commits."""
        with self._writer:
            yield
        self._commits += 1
        if self._commits >= self._every:
            self._commits = 0
            self._wake.set()

    def close(self) -> None:
        """Run a last TRUNCATE checkpoint and stop the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self._stopping:
                self._round()
        self._checkpoint("TRUNCATE")
        self._disconnect()

    def _round(self) -> None:
        result = self._checkpoint("PASSIVE")
        if result is not None and result[1] >= self._limit:
            with self._writer:
                result = self._checkpoint("RESTART")
            if result is not None and result[0]:
                log.warning(
                    "the SQLite WAL holds %d pages and could not be reset (a reader keeps an "
                    "older snapshot, or another connection kept writing): trying again on "
                    "the next round",
                    result[1],
                )

    def _checkpoint(self, mode: str) -> tuple[int, int, int] | None:
        """(busy, pages in the WAL, pages checkpointed), or None when it failed."""
        try:
            if self._conn is None:
                self._conn = self._connect()
                self._conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            row = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except Exception as exc:
            log.warning("a %s checkpoint of the SQLite WAL failed: %s", mode, exc)
            self._disconnect()
            return None
        self.runs[mode] += 1
        return int(row[0]), int(row[1]), int(row[2])

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()
        except Exception as exc:
            log.warning("closing the WAL checkpointer's connection failed: %s", exc)
