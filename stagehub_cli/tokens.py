"""Where the client keeps its access/refresh token pair: in memory, or in a 0600 JSON file keyed by API URL."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

TOKENS_FILE = "tokens.json"


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str | None = None
    email: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"accessToken": self.access_token, "refreshToken": self.refresh_token, "email": self.email}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tokens | None:
        access = data.get("accessToken")
        if not isinstance(access, str) or not access:
            return None
        refresh = data.get("refreshToken")
        email = data.get("email")
        return cls(access, refresh if isinstance(refresh, str) else None, email if isinstance(email, str) else None)


class TokenStore(Protocol):
    """Keeps one token pair (for one API). `save` is called after login and after every refresh."""

    def load(self) -> Tokens | None: ...

    def save(self, tokens: Tokens) -> None: ...

    def clear(self) -> None: ...


class MemoryTokenStore:
    """A token store for one process (library use, tests)."""

    def __init__(self, tokens: Tokens | None = None) -> None:
        self.tokens = tokens

    def load(self) -> Tokens | None:
        return self.tokens

    def save(self, tokens: Tokens) -> None:
        self.tokens = tokens

    def clear(self) -> None:
        self.tokens = None


def normalise_api_url(api_url: str) -> str:
    return api_url.strip().rstrip("/")


class FileTokenStore:
    """Tokens for one API URL inside `<config_dir>/tokens.json` ({api_url: pair}), created 0600 in a 0700 dir.

    Writes go to a temporary 0600 file that replaces the old one, so a crash never leaves half a file and the
    secret is never readable by others, not even for a moment.
    """

    _lock = threading.Lock()  # one process may hold several clients on the same file

    def __init__(self, config_dir: Path | str, api_url: str) -> None:
        self.config_dir = Path(config_dir)
        self.path = self.config_dir / TOKENS_FILE
        self.api_url = normalise_api_url(api_url)

    def load(self) -> Tokens | None:
        entry = self._read_all().get(self.api_url)
        return Tokens.from_json(entry) if isinstance(entry, dict) else None

    def save(self, tokens: Tokens) -> None:
        with self._lock:
            everything = self._read_all()
            everything[self.api_url] = tokens.to_json()
            self._write_all(everything)

    def clear(self) -> None:
        with self._lock:
            everything = self._read_all()
            if everything.pop(self.api_url, None) is not None:
                self._write_all(everything)

    def _read_all(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_all(self, everything: dict[str, Any]) -> None:
        self.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            os.chmod(self.config_dir, 0o700)
        temporary = self.path.with_name(f".{TOKENS_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                if hasattr(os, "fchmod"):  # O_CREAT's mode does not apply to a stale file left by a crash
                    os.fchmod(handle.fileno(), 0o600)
                json.dump(everything, handle, indent=2)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        os.replace(temporary, self.path)
