"""The prompt catalogues on disk: the built-in ``<code>.toml`` files beside this module,
and a site's own in ``[flows] catalogues`` (one there replaces the built-in one of its
code). Read once at start-up, like the settings file.

TOML rather than gettext ``.po``: Python reads it without a dependency or a compile step
(``.po`` needs ``msgfmt`` or babel to become ``.mo``), a translator edits plain
``key = "text"`` lines, and a catalogue holds more than strings: the voice and the words
for the digits, which a ``.po`` file has no place for.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from fastagi.domain.language import (
    DEFAULT_LANGUAGE,
    Catalogue,
    CatalogueError,
    Languages,
    is_language_code,
    parse_catalogue,
)

__all__ = ["BUILT_IN", "load_languages"]

BUILT_IN = Path(__file__).parent


def load_languages(site_directory: Path | None = None) -> Languages:
    """Every catalogue, English first (the others fall back to it). Raises
    CatalogueError for a file that cannot be read or parsed, naming it."""
    files = {path.stem: path for path in sorted(BUILT_IN.glob("*.toml"))}
    if site_directory is not None:
        try:
            files.update({path.stem: path for path in sorted(site_directory.glob("*.toml"))})
        except OSError as exc:
            raise CatalogueError(f"cannot read catalogues in {site_directory}: {exc}") from exc
    english = _load(DEFAULT_LANGUAGE, files[DEFAULT_LANGUAGE], fallback=None)
    catalogues: dict[str, Catalogue] = {DEFAULT_LANGUAGE: english}
    for code, path in files.items():
        if code != DEFAULT_LANGUAGE:
            catalogues[code] = _load(code, path, fallback=english)
    return Languages(catalogues)


def _load(code: str, path: Path, *, fallback: Catalogue | None) -> Catalogue:
    if not is_language_code(code):
        raise CatalogueError(f"{path}: the file name must be a language code, like pl.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"{path}: {exc}") from exc
    try:
        return parse_catalogue(code, data, fallback=fallback)
    except CatalogueError as exc:
        raise CatalogueError(f"{path}: {exc}") from None
