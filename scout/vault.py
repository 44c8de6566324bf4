"""Scout's secrets, and how they travel between its processes without an environment.

A task's commands run as Scout's user (as root, too, where Scout runs as root), and
``/proc/<pid>/environ`` of every process that user owns is theirs to read: the block a
process was exec'd with stays there for its whole life, whatever it later does to
``os.environ``. So no Scout process keeps a secret in that block:

* the processes a person starts (``run_servers.py``, ``scout up``, ``python -m
  scout.server``, ``python -m scout.ui``) re-execute themselves as their first act when
  a secret is in their environment: the new image gets the same environment without
  the secrets, and the secrets on an inherited pipe (SCOUT_SECRETS_FD);
* the launcher hands its children their secrets the same way, on a pipe of their own;
* the zygote, the leaders and the workers never get them (scout.supervisor.worker_env).

A pipe rather than a file: nothing is written to disk, and once read it is gone.
Library code for the launcher, the servers and the supervisor; nothing here keeps state.
"""
from __future__ import annotations

import json
import os
import sys

SECRET_NAMES = ("SCOUT_API_TOKEN", "SCOUT_WEBHOOK_SECRET", "SCOUT_UI_AUTH")
FD_VAR = "SCOUT_SECRETS_FD"


def _pipe_holding(values: dict[str, str]) -> int:
    """The read end of a pipe that holds `values` as JSON (the write end is closed)."""
    data = json.dumps(values).encode()
    read, write = os.pipe()
    try:
        if len(data) > 60_000:
            raise ValueError("secrets too large to hand over")
        os.write(write, data)  # fits in the pipe's buffer: no reader needed yet
    finally:
        os.close(write)
    return read


def take() -> dict[str, str]:
    """The secrets handed to this process on SCOUT_SECRETS_FD (read once; the fd is closed
    and the variable dropped), plus any still in its environment."""
    found = {k: os.environ[k] for k in SECRET_NAMES if os.environ.get(k)}
    raw_fd = os.environ.pop(FD_VAR, None)
    if raw_fd and raw_fd.isdigit():
        fd = int(raw_fd)
        chunks = []
        try:
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            os.close(fd)
        except OSError:
            chunks = []
        if chunks:
            handed = json.loads(b"".join(chunks))
            found.update({k: v for k, v in handed.items() if k in SECRET_NAMES and v})
    return found


def reexec_without_secrets() -> None:
    """If a secret is in this process's exec'd environment, run this same command again
    without it (same pid), the secrets on a pipe. Call it first thing in a main()."""
    if not any(os.environ.get(k) for k in SECRET_NAMES):
        return
    secrets = take()
    env = {k: v for k, v in os.environ.items() if k not in SECRET_NAMES}
    fd = _pipe_holding(secrets)
    os.set_inheritable(fd, True)
    env[FD_VAR] = str(fd)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def hand_over(env: dict[str, str], secrets: dict[str, str]) -> tuple[dict[str, str], int | None]:
    """A child's environment without secrets, and the fd of a pipe holding `secrets` for it
    (pass it with Popen(pass_fds=...), then close it in the parent); None when there are none."""
    env = {k: v for k, v in env.items() if k not in SECRET_NAMES and k != FD_VAR}
    secrets = {k: v for k, v in secrets.items() if k in SECRET_NAMES and v}
    if not secrets:
        return env, None
    fd = _pipe_holding(secrets)
    env[FD_VAR] = str(fd)
    return env, fd
