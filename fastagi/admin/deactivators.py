"""Who may deactivate alarms, with which PIN."""

from __future__ import annotations

from fastagi.admin.audit import record_change
from fastagi.domain import pins
from fastagi.domain.directory import is_extension
from fastagi.store import StoreError, Stores


async def set_deactivator(stores: Stores, extension: str, pin: str, *, by: str) -> bool:
    """Allow ``extension`` to deactivate with ``pin`` (hashed here, in an executor: scrypt
    takes tens of milliseconds); any lockout of it ends. True if it is new."""
    extension = extension.strip()
    if not is_extension(extension):
        raise StoreError(
            f"malformed extension '{extension}': expected 1 to 20 digits", field="extension"
        )
    try:
        pin_hash = await pins.hash_pin_async(pin)
    except ValueError as exc:
        raise StoreError(str(exc), field="pin") from None
    created = await stores.deactivators.set_deactivator(extension, pin_hash)
    await stores.deactivators.clear_pin_failures(extension)
    action = "deactivator add" if created else "deactivator change"
    await record_change(stores, action, by=by, extension=extension)
    return created


async def remove_deactivator(stores: Stores, extension: str, *, by: str) -> None:
    await stores.deactivators.remove_deactivator(extension.strip())
    await record_change(stores, "deactivator remove", by=by, extension=extension.strip())


async def unlock_deactivator(stores: Stores, extension: str, *, by: str) -> None:
    """Forget the extension's wrong PINs and end its lockout."""
    await stores.deactivators.clear_pin_failures(extension.strip())
    await record_change(stores, "deactivator unlock", by=by, extension=extension.strip())
