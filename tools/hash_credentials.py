#!/usr/bin/env python3
"""Write entries of monitor/vendors/data/default_credentials.yaml from a list kept outside the repository.

Usage:
    python tools/hash_credentials.py < defaults.tsv >> monitor/vendors/data/default_credentials.yaml

Each input line is tab-separated: ``id  vendor  account  password  description  source`` (an empty
password is an empty field; ``#`` lines are skipped). Each entry gets a fresh random salt and
``sha256(salt || password)``; the password is not written anywhere. Keep the input file out of the
repository (the point of hashing is that no cleartext list ships).
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(_REPO))

from monitor.vendors.credentials import hash_password  # noqa: E402


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main() -> int:
    for number, line in enumerate(sys.stdin, 1):
        line = line.rstrip("\n")
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 6:
            print(f"line {number}: need 6 tab-separated fields, got {len(parts)}", file=sys.stderr)
            return 2
        ident, vendor, account, password, description, source = parts
        salt = secrets.token_bytes(16)
        sys.stdout.write(
            f"  - id: {ident}\n    vendor: {vendor}\n    account: {_quote(account)}\n"
            f"    description: {_quote(description)}\n    source: {_quote(source)}\n"
            f"    salt: {salt.hex()}\n    hash: {hash_password(salt, password).hex()}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
