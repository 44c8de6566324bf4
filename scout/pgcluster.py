"""A throwaway PostgreSQL cluster on loopback, for the tests and the benchmarks.

`TempCluster().start()` runs `initdb` in a fresh temporary folder and starts `postgres` on a
free 127.0.0.1 port with trust authentication, and `stop()` removes it all. PostgreSQL refuses
to run as root, so when this process is root the cluster runs as an unprivileged user (the
`postgres` account Debian's package creates, else `nobody`) through `runuser`. Nothing here is
used by a Scout server: production points SCOUT_DB at a PostgreSQL someone runs.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

# Settings for a cluster whose data may be lost: no fsync (tests), or the server's defaults (bench).
FAST = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


class ClusterError(RuntimeError):
    """PostgreSQL is missing, or the cluster did not start."""


def bin_dir() -> str:
    """The folder of initdb/pg_ctl: PATH first, else the newest of Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not versions:
        raise ClusterError("PostgreSQL is not installed (scripts/install-postgres.sh installs it)")
    return os.path.dirname(versions[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    """The user to run PostgreSQL as, or None for this process's own (when it is not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ClusterError("running as root and found neither a 'postgres' nor a 'nobody' user to run PostgreSQL as")


@dataclass
class TempCluster:
    """One initdb'd cluster in a temporary folder, serving database `scout` on 127.0.0.1:port."""

    fast: bool = True
    max_connections: int = 300
    port: int = 0
    folder: str = ""
    user: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)

    @property
    def url(self) -> str:
        return f"postgresql://scout@127.0.0.1:{self.port}/scout"

    def database_url(self, name: str) -> str:
        return f"postgresql://scout@127.0.0.1:{self.port}/{name}"

    def _cmd(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *argv] if self.user else list(argv)

    def start(self, timeout: float = 60.0) -> "TempCluster":
        bindir = bin_dir()
        self.user = _run_as()
        self.folder = tempfile.mkdtemp(prefix="scout-pg-")
        data = os.path.join(self.folder, "data")
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        os.chmod(self.folder, 0o700)
        self._check(self._cmd(f"{bindir}/initdb", "-D", data, "-U", "scout", "-A", "trust", "-E", "UTF8",
                              "--no-sync", "--locale=C"), "initdb")
        self.port = self.port or _free_port()
        options = ["-c", f"port={self.port}", "-c", "listen_addresses=127.0.0.1",
                   "-c", f"unix_socket_directories={self.folder}", "-c", f"max_connections={self.max_connections}",
                   *(FAST if self.fast else ()), *self.extra]
        self._check(self._cmd(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(self.folder, "log"), "-w",
                              "-t", str(int(timeout)), "-o", " ".join(options), "start"), "pg_ctl start")
        self._check(self._cmd(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "scout",
                              "scout"), "createdb")
        return self

    def create_database(self, name: str) -> str:
        """A fresh empty database in this cluster; returns its URL."""
        self._check(self._cmd(f"{bin_dir()}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "scout",
                              name), "createdb")
        return self.database_url(name)

    def stop(self) -> None:
        if not self.folder:
            return
        subprocess.run(self._cmd(f"{bin_dir()}/pg_ctl", "-D", os.path.join(self.folder, "data"), "-m",
                                 "immediate", "-w", "stop"), capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = ""

    def log(self) -> str:
        try:
            with open(os.path.join(self.folder, "log"), errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def _check(self, argv: list[str], what: str) -> None:
        out = subprocess.run(argv, capture_output=True, text=True, cwd="/", stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise ClusterError(f"{what} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}\n"
                               f"{self.log()[-2000:]}")


def wait_until_ready(url: str, timeout: float = 30.0) -> None:
    """Until a connection to url succeeds."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
