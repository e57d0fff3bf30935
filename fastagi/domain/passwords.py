"""Web console passwords: Argon2id (argon2-cffi), verified in constant time.

Argon2id is memory-hard: each guess at a stolen hash costs 64 MiB and tens of
milliseconds (argon2-cffi's RFC 9106 "low memory" profile). The parameters travel in the
stored string, so they can be raised later and old hashes still verify (and are
re-hashed at the next login: :func:`needs_rehash`).

Hashing blocks the CPU for that long: the server's event loop uses the ``*_async``
wrappers, which run it in a thread.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def _hasher() -> PasswordHasher:
    # Argon2id with argon2-cffi's defaults (RFC 9106 low-memory: t=3, m=64 MiB, p=4).
    return PasswordHasher()


def validate_password(password: str) -> None:
    """Raise ValueError unless the password is acceptable; the message never quotes it."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")
    if any(char in password for char in "\r\n\0"):
        raise ValueError("password must be one line (no CR, LF or NUL)")


def hash_password(password: str) -> str:
    """``$argon2id$...`` for a valid password (ValueError otherwise). Blocks ~50 ms."""
    validate_password(password)
    return _hasher().hash(password)


# The hash of a random password nobody knows: verifying against it for an unknown user
# name spends the same time as a real check, so timing does not tell which names exist.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$MDpXJIjLtBfBmD9eOBv"
    "G2A$6frVGQhJiojoXAvCKRmz0xU2XNulJAm6gwwqH2awbOs"
)


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` is the one ``stored`` was made from; False (never an
    exception) for a malformed hash, and for None after the same work as a real check."""
    try:
        return _hasher().verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with weaker parameters than today's."""
    try:
        return _hasher().check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, stored: str | None) -> bool:
    return await asyncio.to_thread(verify_password, password, stored)
