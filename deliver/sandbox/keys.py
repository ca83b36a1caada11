"""SSH keys for the sandbox's hosts and deploy user, in OpenSSH formats."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def ensure_ed25519_key(path: Path, *, comment: str) -> str:
    """Create an ed25519 key pair at `path` and `path.pub` unless present; return the public key."""
    public_path = path.with_name(path.name + ".pub")
    if path.exists() and public_path.exists():
        return public_path.read_text().strip()
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.OpenSSH,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        encoding=serialization.Encoding.OpenSSH, format=serialization.PublicFormat.OpenSSH
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as private_file:
        private_file.write(private)
    line = f"{public.decode()} {comment}"
    public_path.write_text(line + "\n")
    return line
