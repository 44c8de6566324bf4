"""Claude Code's transcripts kept in Scout's log: the SDK's SessionStore adapter.

Runs in the worker process. Claude Code keeps each conversation in a file of its own
(``~/.claude/projects/<project>/<session id>.jsonl``), which it deletes after
``cleanupPeriodDays`` (30 by default) and which another ``HOME`` does not have; without it,
``resume`` fails ("No conversation found"). So every task runs with the SDK's
``session_store`` option pointed at this adapter: the SDK mirrors every line Claude Code
writes into the store (``append``), and on ``resume`` loads it back (``load``) into a
temporary config directory the CLI resumes from. Scout's log, not the file, is then what
a conversation lives in; retention and deletes remove it with its session.

One refinement of the SDK's plan: when the local file holds every line the store has (by
the lines' uuids; the usual case, same machine, nothing swept), ``load`` copies it into the
store if it holds more, and answers None: the CLI resumes from its own file. That way a mirror
that missed lines (a worker killed mid-turn, a full database) is mended from the file
while it still exists, and the store never lags behind what Claude Code itself knows.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any

from claude_agent_sdk.types import SessionKey, SessionListSubkeysKey, SessionStore

from .store import EventLog


def projects_dir() -> str:
    """Where Claude Code keeps its transcripts (under CLAUDE_CONFIG_DIR, else ~/.claude)."""
    base = os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".claude")
    return os.path.join(base, "projects")


def local_transcript(claude_session_id: str, project_key: str | None = None) -> str | None:
    """The path of the conversation's local transcript file, if there is one (in the project
    directory given, else in any: the CLI finds a conversation begun in another cwd)."""
    root = projects_dir()
    if project_key:
        path = os.path.join(root, project_key, f"{claude_session_id}.jsonl")
        if os.path.isfile(path):
            return path
    found = glob.glob(os.path.join(glob.escape(root), "*", f"{glob.escape(claude_session_id)}.jsonl"))
    return found[0] if found else None


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The JSON object lines of a transcript file (a torn last line is left out)."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
    return out


class ScoutSessionStore(SessionStore):
    """The SDK's SessionStore over Scout's store, for one Scout session's conversation.

    Keys are looked up by Claude Code's session id alone (a uuid), not by the project key
    the SDK derives from the cwd: a session may move to another working directory between
    its tasks and must keep its history.
    """

    def __init__(self, store: EventLog, session_id: str) -> None:
        self.store = store
        self.session_id = session_id

    async def append(self, key: SessionKey, entries: list[Any]) -> None:
        self.store.append_transcript(self.session_id, key["session_id"], key.get("subpath") or "", entries)

    async def load(self, key: SessionKey) -> list[Any] | None:
        subpath = key.get("subpath") or ""
        if not subpath:
            local = local_transcript(key["session_id"], key["project_key"])
            if local is not None:
                lines = read_jsonl(local)
                mine = {e["uuid"] for e in lines if isinstance(e.get("uuid"), str)}
                stored = self.store.transcript_uuids(key["session_id"])
                if lines and stored <= mine:  # the file has every line the store has
                    if mine - stored:  # and more: the store takes the file's version
                        self.store.replace_transcript(self.session_id, key["session_id"], "", lines)
                    return None  # the CLI resumes from its own, complete file
        return self.store.load_transcript(key["session_id"], subpath)

    async def list_subkeys(self, key: SessionListSubkeysKey) -> list[str]:
        return self.store.transcript_subpaths(key["session_id"])

    async def delete(self, key: SessionKey) -> None:
        self.store.delete_transcript(key["session_id"], key.get("subpath"))


def history_available(store: EventLog, claude_session_id: str) -> bool:
    """Can the conversation be resumed: is it in a local transcript file or in the store?"""
    local = local_transcript(claude_session_id)
    try:
        if local is not None and os.path.getsize(local) > 0:
            return True
    except OSError:  # deleted just now
        pass
    return store.transcript_length(claude_session_id) > 0
