"""Vendors' factory passwords, as salted hashes (``data/default_credentials.yaml``): is this login one?

The file holds, per entry, the account name (in clear: the alert says which account), the vendor, a
description of the default and where it is documented, a random salt and ``sha256(salt || password)``.
The passwords themselves are nowhere in the repository or in what camwatch writes: the analyzers call
:meth:`DefaultCredentials.match` with a password they just decoded (HTTP or RTSP ``Basic``, an ONVIF
``PasswordText``) and keep only the entry it returns. The list is public knowledge (vendor manuals,
Mirai's credential table); hashing keeps it from being one more cleartext password list, not from being
guessed. ``tools/hash_credentials.py`` writes the entries.

The hash is fast on purpose: a login is checked against the few entries of its account, and a flood
of logins must not cost the agent a key-derivation function per attempt.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

ALGORITHM = "sha256"


@dataclass(frozen=True, slots=True)
class DefaultCredential:
    """One vendor default: which account and which vendor's factory password (never the password)."""

    id: str
    vendor: str
    account: str
    description: str
    source: str
    salt: bytes
    digest: bytes

    def matches(self, password: str) -> bool:
        """Is ``password`` this entry's (constant-time compare)?"""
        return hmac.compare_digest(hash_password(self.salt, password), self.digest)


def hash_password(salt: bytes, password: str) -> bytes:
    """``sha256(salt || password)`` with the password as UTF-8."""
    return hashlib.sha256(salt + password.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class DefaultCredentials:
    """The entries by account name (lowercase: devices compare account names without case)."""

    by_account: dict[str, tuple[DefaultCredential, ...]]

    def match(self, account: str, password: str) -> DefaultCredential | None:
        """The vendor default this account/password pair is, or None."""
        for entry in self.by_account.get(account.lower(), ()):
            if entry.matches(password):
                return entry
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_account.values())

    @classmethod
    def from_mapping(cls, data: object) -> DefaultCredentials:
        """Read the file's structure; raises ValueError naming the entry that is wrong."""
        if not isinstance(data, dict) or data.get("version") != 1 or data.get("algorithm") != ALGORITHM:
            raise ValueError(f"default credentials: need 'version: 1' and 'algorithm: {ALGORITHM}'")
        entries = data.get("credentials")
        if not isinstance(entries, list):
            raise ValueError("default credentials: need a 'credentials' list")
        by_account: dict[str, list[DefaultCredential]] = {}
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            where = f"credentials[{i}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: must be a mapping")
            texts = {}
            for key in ("id", "vendor", "account", "description", "source", "salt", "hash"):
                value = entry.get(key)
                if not isinstance(value, str) or (key != "account" and not value):
                    raise ValueError(f"{where}: '{key}' must be a non-empty string")
                texts[key] = value
            if texts["id"] in seen:
                raise ValueError(f"{where}: id {texts['id']} is used twice")
            seen.add(texts["id"])
            try:
                salt, digest = bytes.fromhex(texts["salt"]), bytes.fromhex(texts["hash"])
            except ValueError:
                raise ValueError(f"{where}: salt and hash must be hexadecimal") from None
            if len(salt) < 8 or len(digest) != 32:
                raise ValueError(f"{where}: the salt needs 8 bytes or more, the hash 32 (SHA-256)")
            cred = DefaultCredential(
                id=texts["id"],
                vendor=texts["vendor"],
                account=texts["account"],
                description=texts["description"],
                source=texts["source"],
                salt=salt,
                digest=digest,
            )
            by_account.setdefault(cred.account.lower(), []).append(cred)
        return cls({k: tuple(v) for k, v in by_account.items()})


@cache
def default_credentials() -> DefaultCredentials:
    """The shipped table."""
    text = (
        resources.files("monitor.vendors")
        .joinpath("data/default_credentials.yaml")
        .read_text(encoding="utf-8")
    )
    return DefaultCredentials.from_mapping(yaml.safe_load(text))
