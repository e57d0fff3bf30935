"""``fastagi recording ...``: recorded locations (*557), list, play, upload, delete."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastagi.admin import recordings as admin
from fastagi.cli.common import Builder, fail, load_settings_or_fail, operator
from fastagi.cli.output import print_json, print_table
from fastagi.store import Stores
from fastagi.store.recordings import RecordedLocation


def register(builder: Builder) -> None:
    actions = builder.group("recording", "recorded locations (*557), paged instead of TTS")
    builder.command(actions, "list", "list the recorded locations", _list, listing=True)
    play = builder.command(
        actions, "play", "print the file of a recording (to play it: aplay PATH)", _play
    )
    _owner_arguments(play)
    upload = builder.command(
        actions, "upload", "make a WAV file (8 kHz 16-bit mono) the recording", _upload
    )
    upload.add_argument("file", type=Path)
    _owner_arguments(upload)
    delete = builder.command(actions, "delete", "delete a recording (TTS is paged again)", _delete)
    _owner_arguments(delete)


def _owner_arguments(parser: argparse.ArgumentParser) -> None:
    owner = parser.add_mutually_exclusive_group(required=True)
    owner.add_argument("--extension", help="the extension's own recording")
    owner.add_argument("--department", help="the department's recording")


def _row(location: RecordedLocation) -> dict[str, object]:
    return {
        "extension": location.extension,
        "department": location.department,
        "file": location.file_name,
        "seconds": round(location.seconds, 2),
        "recorded_by": location.recorded_by,
        "recorded_at": location.recorded_at.isoformat(),
    }


async def _list(stores: Stores, args: argparse.Namespace) -> int:
    locations = await stores.recordings.list()
    if args.json:
        print_json([_row(location) for location in locations])
        return 0
    print_table(
        ["FOR", "SECONDS", "RECORDED BY", "RECORDED AT", "FILE"],
        [
            [
                location.owner,
                f"{location.seconds:.1f}",
                location.recorded_by,
                f"{location.recorded_at:%Y-%m-%d %H:%M}",
                location.file_name,
            ]
            for location in locations
        ],
        empty="no recorded locations",
    )
    return 0


async def _play(stores: Stores, args: argparse.Namespace) -> int:
    if args.extension is not None:
        location = await stores.recordings.for_extension(args.extension.strip())
    else:
        location = await stores.recordings.for_department(args.department)
    if location is None:
        fail(f"no recording for {args.extension or args.department}")
    print(load_settings_or_fail().recording.directory / location.file_name)
    return 0


async def _upload(stores: Stores, args: argparse.Namespace) -> int:
    location = await admin.keep_recording(
        stores,
        load_settings_or_fail().recording,
        args.file,
        by=operator(),
        extension=args.extension,
        department=args.department,
    )
    print(f"recorded location of {location.owner}: {location.seconds:.1f} s")
    return 0


async def _delete(stores: Stores, args: argparse.Namespace) -> int:
    location = await admin.delete_recording(
        stores,
        load_settings_or_fail().recording,
        by=operator(),
        extension=args.extension,
        department=args.department,
    )
    print(f"deleted the recorded location of {location.owner}")
    return 0
