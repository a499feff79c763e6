"""Make an API key: ``python -m ml_production_service.keys new <id> [--file PATH]`` (``make api-key``).

The key is printed once and never stored: the keys file (``MPS_API_KEYS_FILE``) holds only ``<id>:<sha256 hex>``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ml_production_service.guard import KEY_ID, KeyFileError, key_digest, load_keys

KEY_PREFIX = "mps_"
"""Marks a string as this service's key (secret scanners and people recognise it); 32 random bytes follow."""
KEY_BYTES = 32
FILE_MODE = 0o600


class KeyCommandError(Exception):
    """A key cannot be made or added; the message is the one line the command prints."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def new_key() -> str:
    """A fresh random key: ``mps_`` and 32 bytes from ``secrets``, URL-safe base64 (header-safe)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def key_line(key_id: str, key: str) -> str:
    """The keys-file line for ``key``: ``<id>:<sha256 hex>``; a bad id is a KeyCommandError (exit 2)."""
    if not KEY_ID.fullmatch(key_id):
        raise KeyCommandError(
            f"bad key id {key_id[:80]!r}: use 1 to 64 letters, digits, '.', '_' or '-' (pattern {KEY_ID.pattern})", 2
        )
    return f"{key_id}:{key_digest(key.encode('ascii')).hex()}"


def _stored_ids(text: str) -> set[str]:
    """The key ids of a keys file's lines (comments and blank lines skipped; the format is load_keys's to judge)."""
    lines = (line.strip() for line in text.splitlines())
    return {line.partition(":")[0].strip() for line in lines if line and not line.startswith("#")}


def add_line(path: Path, line: str) -> None:
    """Append ``line`` to the keys file ``path`` (created 0600 when missing) unless its id is there already.

    The file as it would be afterwards is checked with ``load_keys`` first, so a malformed file is refused
    (exit 1) and never grows; the append keeps the file's own inode, owner and mode.
    """
    key_id = line.partition(":")[0]
    created = not path.exists()
    try:
        existing = "" if created else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KeyCommandError(f"keys file {path} cannot be read: {error}", 1) from None
    if key_id in _stored_ids(existing):
        raise KeyCommandError(f"key id {key_id!r} is already in {path}: choose another id or remove its line", 1)
    addition = ("\n" if existing and not existing.endswith("\n") else "") + line + "\n"
    with tempfile.TemporaryDirectory() as scratch:
        proposed = Path(scratch) / "keys"
        proposed.write_text(existing + addition, encoding="utf-8")
        try:
            load_keys(proposed)
        except KeyFileError as error:
            raise KeyCommandError(str(error).replace(str(proposed), str(path)), 1) from None
    try:
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if created else 0)
        with os.fdopen(os.open(path, flags, FILE_MODE), "a", encoding="utf-8") as keys_file:
            if created:
                os.fchmod(keys_file.fileno(), FILE_MODE)  # 0600 whatever the umask
            keys_file.write(addition)
    except OSError as error:
        raise KeyCommandError(f"keys file {path} cannot be written: {error}", 1) from None
    try:
        load_keys(path)  # what the service will read: if it changed under us, say so now rather than at start-up
    except KeyFileError as error:
        raise KeyCommandError(str(error), 1) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml_production_service.keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="make a key for <id>; print it once, with its keys-file line")
    new.add_argument("key_id", metavar="id", help="the key's public name: 1-64 letters, digits, '.', '_', '-'")
    new.add_argument("--file", type=Path, help="append the line to this keys file (created with mode 0600)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 on success, 1 when the keys file refuses the key, 2 on a bad id or usage."""
    # The command's output is its interface (the key, the line), not a log event: plain lines, no structlog.
    args = _parser().parse_args(argv)
    key = new_key()
    try:
        line = key_line(args.key_id, key)
        if args.file is not None:
            add_line(args.file, line)
    except KeyCommandError as error:
        sys.stderr.write(f"{error}\n")
        return error.exit_code
    lines = [f"API key {args.key_id!r}, shown this once: only its sha256 is stored, so keep it now.", key]
    if args.file is not None:
        lines.append(f"Added {args.key_id!r} to {args.file}; restart the service to load it (MPS_API_KEYS_FILE).")
    else:
        lines += ["Add this line to the keys file (MPS_API_KEYS_FILE), then restart the service:", line]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
