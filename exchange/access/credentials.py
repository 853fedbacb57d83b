"""API credentials as journaled state: a core :class:`~exchange.core.exchange.Module`.

Issuing and revoking an API key are ordinary commands, so they go through the journal, survive
a restart and replay to the same state (see docs/adr/0003-gateway.md). Only a digest of a key
is ever stored: the commands, the journal, snapshots and the state hash carry ``key_hash``
(lower-case hex), never the key. The gateway hashes what a client presents and looks the
digest up in :attr:`Credentials.by_hash`.

The digest is HMAC-SHA256 under a server secret that is not in the journal (a file in the data
directory, see :func:`load_secret`; docs/adr/0008-api-key-hashing.md): a copy of the journal or
a snapshot alone does not let anyone test guesses against the stored digests. Records written
before that (``scheme`` ``sha256``: plain SHA-256) still authenticate, once: the first
successful use rehashes them (a journaled ``rehash_api_key``).

Each credential has a role:

* ``firm``      — trades for one firm (``firm_id``) over the websocket;
* ``operator``  — runs the market over the HTTP admin API (and may read market data);
* ``verifier``  — MRV verification (used by the compliance module's endpoints);
* ``platform``  — a carbon-inclusive platform (``firm_id``: its account) submits batches of
  recorded actions to the credit registry (exchange/registry/api.py).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from ..core import errors as E
from ..core.commands import Command, command
from ..core.events import event
from ..core.exchange import Module

ROLE_FIRM = "firm"
ROLE_OPERATOR = "operator"
ROLE_VERIFIER = "verifier"
ROLE_PLATFORM = "platform"
ROLES = (ROLE_FIRM, ROLE_OPERATOR, ROLE_VERIFIER, ROLE_PLATFORM)
ROLES_WITH_FIRM = (ROLE_FIRM, ROLE_PLATFORM)  # keys that act for one account (firm_id)


SCHEME_SHA256 = "sha256"  # plain SHA-256: records written before the keyed hash (legacy)
SCHEME_HMAC = "hmac-sha256"  # HMAC-SHA256 under the server secret
SECRET_FILE = "api-key-secret"
_SECRET_BYTES = 32


def hash_key(api_key: str, secret: bytes | None = None) -> str:
    """The stored form of an API key: HMAC-SHA256 under ``secret`` (hex), or without a secret
    the legacy plain SHA-256 hex digest of its UTF-8 bytes."""
    b = api_key.encode("utf-8", "surrogatepass")
    if secret is None:
        return hashlib.sha256(b).hexdigest()
    return hmac.new(secret, b, hashlib.sha256).hexdigest()


def load_secret(data_dir: str | Path, create: bool = True) -> bytes:
    """The server's key-hashing secret, ``<data_dir>/api-key-secret``: 32 random bytes, made
    on the first start with mode 0600 (created exclusively: two processes starting at once
    cannot both write one). Kept out of the journal on purpose: whoever holds only the
    journal or a snapshot cannot test guesses against the digests. Losing it locks every
    key out (issue new ones with ``keys create``), so it belongs in the data directory's
    backups, apart from the journal's."""
    path = Path(data_dir) / SECRET_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_bytes(_SECRET_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return load_secret(data_dir, create=False)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return data
    if len(data) != _SECRET_BYTES:
        raise ValueError(f"{path}: expected {_SECRET_BYTES} bytes, found {len(data)}")
    return data


def new_key() -> str:
    """A fresh 256-bit random API key (URL-safe text)."""
    return secrets.token_urlsafe(32)


def key_id_for(key_hash: str) -> str:
    """A stable, non-secret identifier derived from the digest (used for demo keys)."""
    return "k-" + key_hash[:12]


@command("issue_api_key")
class IssueApiKey(Command):
    key_id: str
    role: str  # firm | operator | verifier
    key_hash: str  # digest (hex) of the key; the key itself is never journaled
    firm_id: str | None = None  # required for role firm
    label: str = ""
    # how key_hash was made; records journaled before the keyed hash have none: sha256
    scheme: str = SCHEME_SHA256


@command("rehash_api_key")
class RehashApiKey(Command):
    """A legacy (plain SHA-256) record's digest replaced by the keyed one, issued by the
    server the first time the key is presented (only then is the key itself at hand)."""

    key_id: str
    key_hash: str
    scheme: str = SCHEME_HMAC


@command("revoke_api_key")
class RevokeApiKey(Command):
    key_id: str


@event("api_key_issued")
class ApiKeyIssued:
    key_id: str
    role: str
    firm_id: str | None


@event("api_key_revoked")
class ApiKeyRevoked:
    key_id: str
    role: str
    firm_id: str | None


class Credential:
    __slots__ = (
        "key_id",
        "role",
        "firm_id",
        "key_hash",
        "label",
        "issued_seq",
        "revoked_seq",
        "scheme",
    )

    def __init__(
        self,
        key_id,
        role,
        firm_id,
        key_hash,
        label="",
        issued_seq=0,
        revoked_seq=0,
        scheme=SCHEME_SHA256,
    ):
        self.key_id = key_id
        self.role = role
        self.firm_id = firm_id
        self.key_hash = key_hash
        self.label = label
        self.issued_seq = issued_seq
        self.revoked_seq = revoked_seq
        self.scheme = scheme

    @property
    def active(self) -> bool:
        return not self.revoked_seq

    def to_state(self) -> list:
        s = [self.role, self.firm_id, self.key_hash, self.label, self.issued_seq, self.revoked_seq]
        if self.scheme != SCHEME_SHA256:  # legacy records keep their old state (and hash)
            s.append(self.scheme)
        return s

    def public(self) -> dict:
        return {
            "key_id": self.key_id,
            "role": self.role,
            "firm_id": self.firm_id,
            "label": self.label,
            "issued_seq": self.issued_seq,
            "revoked": not self.active,
        }


def _is_hex_digest(s) -> bool:
    if type(s) is not str or len(s) != 64:
        return False
    try:
        int(s, 16)
    except ValueError:
        return False
    return s == s.lower()


class Credentials(Module):
    """Hashed API keys with a role each; revoked keys stay on record (never reused)."""

    name = "credentials"

    def __init__(self, ex):
        super().__init__(ex)
        self.keys: dict[str, Credential] = {}
        self.by_hash: dict[str, Credential] = {}  # active keys only
        # run-time, not state: the hashing secret (None: no keyed lookups, e.g. journal
        # tools) and the server's hook that journals a legacy record's rehash
        self.secret: bytes | None = None
        self.on_legacy = None  # fn(cred, new_hash), called by lookup

    def handlers(self):
        return {IssueApiKey: self._issue, RevokeApiKey: self._revoke, RehashApiKey: self._rehash}

    def digest(self, api_key: str) -> tuple[str, str]:
        """``(key_hash, scheme)`` for a new record of ``api_key``."""
        if self.secret is None:
            raise RuntimeError("no key-hashing secret: Credentials.secret is not set")
        return hash_key(api_key, self.secret), SCHEME_HMAC

    def _issue(self, c: IssueApiKey) -> list:
        if type(c.key_id) is not str or not c.key_id or len(c.key_id) > 64:
            raise E.Reject(E.BAD_PARAMETER, "key_id must be a non-empty string of <= 64 chars")
        if c.key_id in self.keys:
            raise E.Reject(E.DUPLICATE_KEY, f"key id {c.key_id!r} exists")
        if c.role not in ROLES:
            raise E.Reject(E.BAD_ROLE, f"role must be one of {ROLES}")
        if c.scheme not in (SCHEME_SHA256, SCHEME_HMAC):
            raise E.Reject(E.BAD_PARAMETER, f"scheme must be {SCHEME_HMAC} or {SCHEME_SHA256}")
        if not _is_hex_digest(c.key_hash):
            raise E.Reject(E.BAD_PARAMETER, "key_hash must be a lower-case SHA-256 hex digest")
        if any(k.key_hash == c.key_hash for k in self.keys.values()):
            raise E.Reject(E.DUPLICATE_KEY, "that key is already on record")
        firm_id = c.firm_id
        if c.role in ROLES_WITH_FIRM:
            if type(firm_id) is not str:
                raise E.Reject(E.BAD_PARAMETER, f"a {c.role} key needs a firm_id")
            self.ex.firm(firm_id)  # UNKNOWN_ACCOUNT / SYSTEM_ACCOUNT
        elif firm_id is not None:
            raise E.Reject(E.BAD_PARAMETER, f"a {c.role} key has no firm_id")
        cred = Credential(
            c.key_id, c.role, firm_id, c.key_hash, str(c.label), self.ex.last_seq, 0, c.scheme
        )
        self.keys[c.key_id] = cred
        self.by_hash[c.key_hash] = cred
        return [ApiKeyIssued(c.key_id, c.role, firm_id)]

    def _revoke(self, c: RevokeApiKey) -> list:
        cred = self.keys.get(c.key_id)
        if cred is None or not cred.active:
            raise E.Reject(E.UNKNOWN_KEY, f"no active key {c.key_id!r}")
        cred.revoked_seq = self.ex.last_seq
        self.by_hash.pop(cred.key_hash, None)
        return [ApiKeyRevoked(cred.key_id, cred.role, cred.firm_id)]

    def _rehash(self, c: RehashApiKey) -> list:
        cred = self.keys.get(c.key_id)
        if cred is None or not cred.active:
            raise E.Reject(E.UNKNOWN_KEY, f"no active key {c.key_id!r}")
        if cred.scheme != SCHEME_SHA256 or c.scheme != SCHEME_HMAC:
            raise E.Reject(E.BAD_PARAMETER, "only a sha256 record is rehashed, to hmac-sha256")
        if not _is_hex_digest(c.key_hash):
            raise E.Reject(E.BAD_PARAMETER, "key_hash must be a lower-case SHA-256 hex digest")
        if c.key_hash in self.by_hash:
            raise E.Reject(E.DUPLICATE_KEY, "that key is already on record")
        self.by_hash.pop(cred.key_hash, None)
        cred.key_hash = c.key_hash
        cred.scheme = c.scheme
        self.by_hash[c.key_hash] = cred
        return []

    # ------------------------------------------------------------------ read side
    def lookup(self, api_key) -> Credential | None:
        """The active credential for a presented key, or None. A legacy (plain SHA-256) record
        matches too, and is handed to :attr:`on_legacy` to be rehashed under the secret."""
        if type(api_key) is not str or not api_key or len(api_key) > 512:
            return None
        by_hash = self.by_hash
        secret = self.secret
        if secret is not None:
            h = hash_key(api_key, secret)
            cred = by_hash.get(h)
            if cred is not None and cred.scheme == SCHEME_HMAC:
                return cred
        cred = by_hash.get(hash_key(api_key))
        if cred is None or cred.scheme != SCHEME_SHA256:
            return None
        if secret is not None and self.on_legacy is not None:
            try:
                self.on_legacy(cred, h)
            except Exception:  # the rehash is retried on the next use; the key still works
                pass
        return cred

    # ------------------------------------------------------------------ state
    def to_state(self):
        return {k: v.to_state() for k, v in sorted(self.keys.items())}

    def load_state(self, state) -> None:
        self.keys = {}
        self.by_hash = {}
        for key_id, s in (state or {}).items():
            cred = Credential(key_id, *s)  # a legacy record has no scheme: sha256
            self.keys[key_id] = cred
            if cred.active:
                self.by_hash[cred.key_hash] = cred


def demo_key_commands(settings, secret: bytes | None = None) -> list:
    """issue_api_key commands for the demo keys in the config (firms, operator, verifier),
    hashed under ``secret`` (without one: legacy SHA-256 records, as benchmarks build). Only
    for the demo market: a production start (``serve --no-demo``) issues none."""
    d = settings.demo
    scheme = SCHEME_SHA256 if secret is None else SCHEME_HMAC
    cmds = []
    for f in d.firms:
        if f.api_key:
            h = hash_key(f.api_key, secret)
            # the key id from the public SHA-256: the same demo key has the same id everywhere
            cmds.append(
                IssueApiKey(
                    key_id=key_id_for(hash_key(f.api_key)),
                    role=ROLE_FIRM,
                    key_hash=h,
                    firm_id=f.firm_id,
                    label=f"demo {f.firm_id}",
                    scheme=scheme,
                )
            )
    if settings.registry is not None:
        for p in d.platforms:
            if p.api_key:
                cmds.append(
                    IssueApiKey(
                        key_id=key_id_for(hash_key(p.api_key)),
                        role=ROLE_PLATFORM,
                        key_hash=hash_key(p.api_key, secret),
                        firm_id=p.platform_id,
                        label=f"demo {p.platform_id}",
                        scheme=scheme,
                    )
                )
    for role, key in ((ROLE_OPERATOR, d.operator_key), (ROLE_VERIFIER, d.verifier_key)):
        if key:
            h = hash_key(key, secret)
            # a verifier key's label is the verifier id it acts as (see compliance/api.py)
            label = d.verifier_id if role == ROLE_VERIFIER else f"demo {role}"
            cmds.append(
                IssueApiKey(
                    key_id=key_id_for(hash_key(key)),
                    role=role,
                    key_hash=h,
                    label=label,
                    scheme=scheme,
                )
            )
    return cmds


def demo_keys(settings, creds: Credentials) -> list[tuple[str, str | None, str]]:
    """(role, firm_id, key) of the config's demo keys that are active in ``creds``."""
    d = settings.demo
    out = []
    for f in d.firms:
        if f.api_key and creds.lookup(f.api_key) is not None:
            out.append((ROLE_FIRM, f.firm_id, f.api_key))
    for p in d.platforms:
        if p.api_key and creds.lookup(p.api_key) is not None:
            out.append((ROLE_PLATFORM, p.platform_id, p.api_key))
    for role, key in ((ROLE_OPERATOR, d.operator_key), (ROLE_VERIFIER, d.verifier_key)):
        if key and creds.lookup(key) is not None:
            out.append((role, None, key))
    return out
