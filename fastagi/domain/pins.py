"""Deactivation PINs: validated, hashed with scrypt, verified in constant time.

A PIN is short (4 to 12 digits), so a stolen hash can be brute-forced whatever we do;
the salt stops precomputed tables and scrypt makes each guess cost memory and time
(``n=2**14, r=8, p=1``: 16 MiB and about 50 ms on the development machine). The
parameters travel in the stored string, ``scrypt$n$r$p$salt_b64$hash_b64``, so they can
be raised later without invalidating the PINs already stored.

Hashing blocks the CPU for that long: the server's event loop must use the ``*_async``
wrappers, which run it in the default executor.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets

MIN_PIN_LENGTH = 4
MAX_PIN_LENGTH = 12
SCHEME = "scrypt"
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# A stored string naming costlier parameters than these is refused rather than run: a
# tampered row must not make the server allocate gigabytes or spin for minutes.
MAX_MEMORY = 256 * 1024 * 1024  # scrypt needs 128 * r * n bytes
MAX_P = 16
_MAXMEM = MAX_MEMORY + 16 * 1024 * 1024  # OpenSSL's limit, with room for its own buffers

# The hash of a random PIN nobody knows: verify_pin_async(pin, None) spends the same time
# on it as on a real hash, so timing does not tell which extensions are deactivators.
_DUMMY_HASH = (
    "scrypt$16384$8$1$HZMy236Fmzc4xKynr0xQKA==$NrqvAmv0dUVL3kyHePruKLETabqpnCxlbS2GfJm2oQw="
)


def validate_pin(pin: str) -> None:
    """Raise ValueError unless ``pin`` is 4 to 12 digits; the message never quotes it."""
    if pin and (not pin.isascii() or not pin.isdigit()):
        raise ValueError("PIN must be made of digits only")
    if len(pin) < MIN_PIN_LENGTH:
        raise ValueError(f"PIN too short: at least {MIN_PIN_LENGTH} digits")
    if len(pin) > MAX_PIN_LENGTH:
        raise ValueError(f"PIN too long: at most {MAX_PIN_LENGTH} digits")


def hash_pin(pin: str) -> str:
    """``scrypt$n$r$p$salt$hash`` for a valid PIN (ValueError otherwise). Blocks ~50 ms."""
    validate_pin(pin)
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(pin, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, length=HASH_BYTES)
    return "$".join([SCHEME, str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_pin(pin: str, stored: str) -> bool:
    """Whether ``pin`` is the PIN ``stored`` was made from.

    False, never an exception, for a PIN that is not digits and for a stored string that
    is malformed or names parameters out of bounds (see :func:`is_pin_hash`).
    """
    parsed = _parse(stored)
    if parsed is None or not pin.isascii() or not pin.isdigit():
        return False
    n, r, p, salt, expected = parsed
    return hmac.compare_digest(
        _scrypt(pin, salt=salt, n=n, r=r, p=p, length=len(expected)), expected
    )


def is_pin_hash(stored: str) -> bool:
    """Whether ``stored`` is a well-formed hash this module can verify."""
    return _parse(stored) is not None


async def hash_pin_async(pin: str) -> str:
    """:func:`hash_pin` in the default executor, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, hash_pin, pin)


async def verify_pin_async(pin: str, stored: str | None) -> bool:
    """:func:`verify_pin` in the default executor. ``stored=None`` (the extension has no
    PIN) costs as long as a real check and answers False."""
    loop = asyncio.get_running_loop()
    if stored is None:
        await loop.run_in_executor(None, verify_pin, pin, _DUMMY_HASH)
        return False
    return await loop.run_in_executor(None, verify_pin, pin, stored)


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return None
    try:
        n, r, p = (int(part) for part in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return None
    power_of_two = n > 1 and n & (n - 1) == 0
    if not (power_of_two and r >= 1 and 128 * r * n <= MAX_MEMORY and 1 <= p <= MAX_P):
        return None
    if len(salt) < 8 or not 16 <= len(digest) <= 64:
        return None
    return n, r, p, salt, digest


def _scrypt(pin: str, *, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        pin.encode("ascii"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=length
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
