"""Keyed digests: what reports, journal records and import records hold instead of values
read from the application's rows (a sample check's rows, an import's natural keys).

Why keyed: a plain hash of an e-mail address is confirmed by hashing a guess, so it hides
nothing from anyone holding a list of addresses. HMAC-SHA256 under a key the reader does
not have confirms nothing; the same value under the same key still gives the same digest,
so a before/after comparison, a later `validate` and an import compared with staging's
still work.

The key (`team_digester`):
- `digests.secret` (a team secret, e.g. `${SEED_DIGEST_KEY}`) when set: every environment
  that shares it makes comparable digests (what `imports.compare_with` needs);
- otherwise a random key made once per environment and kept on the state host beside the
  journal (`<state_dir>/digest.key`, 0600): that environment's runs compare with each other
  (from any control machine, a fresh CI runner included), never with another environment.
Every digested value says under which key (`key_id`, a fingerprint that reveals nothing of
the key), so records are compared only like with like.

The key never leaves this process: digests are computed here, in Python; only the
fingerprint is written anywhere.
"""

from __future__ import annotations

import contextlib
import hmac
import posixpath
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import paramiko

from seed.config.environment import Environment
from seed.errors import StepFailed
from seed.remote.ssh import Remote

PREFIX = "hmac:"  # a digested value: hmac:<16 hex digits>
KEY_FILE = "digest.key"
_DIGEST_RE = re.compile(r"^hmac:[0-9a-f]{16}$")
_KEY_RE = re.compile(rb"^[0-9a-f]{64}\s*$")


@dataclass(frozen=True)
class Digester:
    """HMAC-SHA256 under one key, truncated to 64 bits (a digest identifies a value within
    a record; 64 bits make an accidental collision in a million values ~3e-8)."""

    key: bytes = field(repr=False)
    origin: str  # where the key came from, for messages: never the key

    @classmethod
    def from_secret(cls, secret: str) -> Digester:
        # its own key derived from the team secret: the digests never equal another use of
        # the same secret (a masking key reused here gives unrelated values)
        derived = hmac.digest(secret.encode(), b"seed digests v1", "sha256")
        return cls(derived, "digests.secret")

    @classmethod
    def ephemeral(cls) -> Digester:
        """A key of this process alone: digests that compare within one run only."""
        return cls(secrets.token_bytes(32), "this run")

    @property
    def key_id(self) -> str:
        """A fingerprint of the key: records say which key made their digests."""
        return hmac.digest(self.key, b"seed digest key id", "sha256").hex()[:12]

    def bytes_digest(self, data: bytes) -> str:
        """16 hex digits (no prefix)."""
        return hmac.digest(self.key, data, "sha256").hex()[:16]

    def __call__(self, value: Any) -> str | None:
        """`hmac:<16 hex>` of a value's text; NULL stays None (it reveals nothing)."""
        if value is None:
            return None
        return PREFIX + self.bytes_digest(str(value).encode("utf-8", "surrogatepass"))


def is_digest(value: Any) -> bool:
    return isinstance(value, str) and bool(_DIGEST_RE.match(value))


def team_digester(env: Environment, state: Remote) -> Digester:
    """The environment's digester: `digests.secret`, else the state host's key file (made
    on first use; two runs making it at once both end up with the one that won)."""
    if env.digests.secret is not None:
        return Digester.from_secret(env.digests.secret.reveal())
    path = posixpath.join(env.state_dir, KEY_FILE)
    where = f"{state.label}:{path}"
    try:
        data = _read(state, path)
        if data is None:
            state.mkdirs(env.state_dir, mode=0o700)
            tmp = f"{path}.{secrets.token_hex(4)}.seed-tmp"
            with state.sftp.open(tmp, "wb") as fh:
                fh.chmod(0o600)
                fh.write(secrets.token_hex(32).encode() + b"\n")
            # SFTP rename (OpenSSH: link + unlink) never replaces an existing file: a key
            # another run made first wins, and this one is dropped
            with contextlib.suppress(OSError):
                state.sftp.rename(tmp, path)
            with contextlib.suppress(OSError):
                state.sftp.remove(tmp)
            data = _read(state, path)
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise StepFailed(
            f"{where}: cannot read or make the digest key ({exc}); check the state "
            "directory's permissions, or set digests.secret in the environment file"
        ) from None
    if data is None or not _KEY_RE.match(data):
        raise StepFailed(
            f"{where}: not a digest key (64 hex digits): remove the file (a new key makes "
            "the recorded digests incomparable) or set digests.secret"
        )
    return Digester(bytes.fromhex(data.decode().strip()), where)


def _read(state: Remote, path: str) -> bytes | None:
    try:
        return state.get_bytes(path)
    except FileNotFoundError:
        return None
