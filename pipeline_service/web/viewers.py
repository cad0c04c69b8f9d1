"""Who is looking: the dashboard's rule for the tenant, since the standalone server has no login.

Every request carries a token (``Authorization: Bearer <token>``); the server knows a fixed
set of tokens, each bound to exactly one tenant and one user, and answers a request with
that tenant's tasks only: a tenant never comes from a request parameter. The set is either

* one tenant (``serve --tenant T``): the server makes a random token at start and prints
  the page's address carrying it (``http://127.0.0.1:8080/#token=...``), or
* a users file (``serve --users FILE``): a JSON object ``{"<token>": {"tenant": "...",
  "user": "..."}}``, for one server shared by several tenants.

The token travels in the address's fragment (never sent to a server, never in a log or a
Referer) and then in a header (a page on another site cannot make a browser send it, so
no cross-site request can act for a user).
"""
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import ConfigurationError, InvalidInputError
from ..ids import check_id

MIN_TOKEN = 16  # characters: a guessable token would hand a tenant's tasks to anyone on the network


@dataclass(frozen=True)
class Viewer:
    tenant_id: str
    user_id: str


class Viewers:
    """The tokens a dashboard accepts, each bound to one tenant and user."""

    def __init__(self, tokens: dict[str, Viewer]) -> None:
        if not tokens:
            raise ConfigurationError("the dashboard needs at least one user: --tenant T or --users FILE")
        for token, viewer in tokens.items():
            if not isinstance(token, str) or len(token) < MIN_TOKEN or not token.isascii() or not token.isprintable():
                raise ConfigurationError(f"a dashboard token must be at least {MIN_TOKEN} printable ASCII "
                                         f"characters (make one with `python -c 'import secrets; "
                                         f"print(secrets.token_urlsafe())'`)")
            try:
                check_id(viewer.tenant_id, "a dashboard user's tenant")
                check_id(viewer.user_id, "a dashboard user's user id")
            except InvalidInputError as exc:
                raise ConfigurationError(str(exc)) from None
        self._tokens = dict(tokens)

    @classmethod
    def single(cls, tenant_id: str, user_id: str = "dashboard") -> tuple["Viewers", str]:
        """One tenant behind a fresh random token; returns the viewers and the token."""
        token = secrets.token_urlsafe(24)
        return cls({token: Viewer(tenant_id, user_id)}), token

    @classmethod
    def from_file(cls, path: str | Path) -> "Viewers":
        try:
            with open(path, encoding="utf-8") as fh:
                document = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the dashboard's users file {path}: {exc}") from None
        shape = 'a JSON object {"<token>": {"tenant": "...", "user": "..."}}'
        if not isinstance(document, dict):
            raise ConfigurationError(f"the users file {path} must be {shape}")
        tokens = {}
        for token, entry in document.items():
            if not isinstance(entry, dict) or set(entry) - {"tenant", "user"} or "tenant" not in entry:
                raise ConfigurationError(f"the users file {path} must be {shape}; an entry is {entry!r}")
            tokens[token] = Viewer(entry["tenant"], entry.get("user", "dashboard"))
        return cls(tokens)

    def find(self, token: str | None) -> Viewer | None:
        """The viewer of ``token``, or None. Every token is compared in constant time, so how
        long a refusal takes tells nothing about the tokens."""
        found = None
        if token:
            for known, viewer in self._tokens.items():
                if hmac.compare_digest(known.encode(), token.encode()):
                    found = viewer
        return found

    def __len__(self) -> int:
        return len(self._tokens)
