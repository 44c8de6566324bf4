"""`scout backup PATH`: a consistent copy of Scout's database, taken while Scout runs.

Runs in the `scout` command's own process, against the database file itself (SCOUT_DB or
--db), so it works whether or not a server is running and needs no token: whoever may read
the file may copy it. The copy is written next to PATH under a temporary name, checked
(PRAGMA integrity_check) and only then renamed to PATH, so PATH is never half a backup.
Restoring is the README's "Backups" section: stop Scout, put the copy in place of SCOUT_DB
(without the old -wal and -shm files), start Scout. A postgresql:// SCOUT_DB is copied by
pg_dump (PgStore.backup) in its custom format, restored with pg_restore.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from dataclasses import dataclass

from .backends import open_store
from .config import ConfigError, Settings, is_postgres_url
from .store import Store, StoreError


@dataclass(frozen=True)
class Backup:
    """A finished backup: where it is, how big, and its integrity check's answer."""

    path: str
    size: int
    integrity: str


def backup(db: str, path: str, force: bool = False) -> Backup:
    """Copy the database `db` to `path` (a new file, or --force). Raises StoreError."""
    path = os.path.abspath(path)
    if is_postgres_url(db):
        return _backup_postgres(db, path, force)
    if not os.path.exists(db):
        raise StoreError(f"there is no database at {db} (set SCOUT_DB or pass --db)")
    if os.path.isdir(path):
        path = os.path.join(path, os.path.basename(db))
    if os.path.exists(path) and not force:
        raise StoreError(f"{path} exists; pass --force to replace it")
    partial = f"{path}.partial-{os.getpid()}"
    store = Store(db, migrate=False)
    try:
        _private_file(partial)
        store.backup(partial)
        conn = sqlite3.connect(partial)
        try:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        if integrity != "ok":
            raise StoreError(f"the copy failed its integrity check ({integrity}); {db} itself may be damaged")
        os.replace(partial, path)
    finally:
        store.close()
        if os.path.exists(partial):
            os.unlink(partial)
    return Backup(path, os.path.getsize(path), integrity)


def _private_file(path: str) -> None:
    """Create the empty file the backup is written into, readable by its owner only: a copy
    of the log holds what the log holds (messages, transcripts), as guarded as the log (0600)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _backup_postgres(url: str, path: str, force: bool) -> Backup:
    """PostgreSQL: pg_dump's custom format of Scout's schema (restore with pg_restore)."""
    if os.path.isdir(path):
        path = os.path.join(path, "scout.dump")
    if os.path.exists(path) and not force:
        raise StoreError(f"{path} exists; pass --force to replace it")
    partial = f"{path}.partial-{os.getpid()}"
    store = open_store(url, migrate=False, pool_size=1)
    try:
        _private_file(partial)
        store.backup(partial)
        os.replace(partial, path)
    finally:
        store.close()
        if os.path.exists(partial):
            os.unlink(partial)
    return Backup(path, os.path.getsize(path), "pg_dump")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scout backup",
        description="Write a consistent copy of Scout's database to PATH, also while tasks run "
                    "(SQLite's online backup API). Restore: stop Scout, copy the backup over SCOUT_DB, "
                    "delete SCOUT_DB's -wal and -shm files, start Scout. On PostgreSQL (a postgresql:// "
                    "SCOUT_DB) it runs pg_dump; restore with pg_restore.")
    parser.add_argument("path", metavar="PATH", help="the file to write (a directory: the database's name in it)")
    parser.add_argument("--db", help="the database to copy (default: SCOUT_DB, else data/scout.db)")
    parser.add_argument("--force", action="store_true", help="replace PATH if it exists")
    args = parser.parse_args(argv)
    try:
        db = args.db or Settings.from_env().db
        out = backup(db, args.path, args.force)
    except (ConfigError, StoreError, OSError) as exc:
        print(f"scout backup: {exc}", file=sys.stderr)
        return 2
    print(f"backed up {db} to {out.path} ({out.size / 2**20:.1f} MB, integrity {out.integrity})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
