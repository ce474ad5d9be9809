"""`registry/aliases/`: the alias history MLflow does not keep, one small JSON file per move.

An event takes effect from the logical day that decided it: the champion *for night D* is the
newest `champion` event decided before D. An event is first staged under a `_pending-` name
(invisible to readers), then published by a rename once MLflow has made the move, so a
reader never sees half an event, nor an event MLflow never made (see `Registry.move_alias`).
"""

from __future__ import annotations

import json
import posixpath
import uuid
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

from nightshift.dates import parse_ds
from nightshift.lake import Lake

CHAMPION = "champion"
_PENDING = "_pending-"


@dataclass(frozen=True)
class AliasEvent:
    """One alias move: from logical day `ds` on, `alias` means `version` (None: removed)."""

    seq: int
    ds: str
    alias: str
    version: str | None
    previous: str | None
    run_id: str | None
    reason: str
    decided_by: str  # "retrain", "rollback", "bootstrap", ...


def _dir(lake: Lake) -> str:
    return posixpath.join(lake.root, "registry", "aliases")


def history(lake: Lake) -> list[AliasEvent]:
    """Every alias move, in the order they were made."""
    fs, base = lake.fs, _dir(lake)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    events = []
    for info in fs.get_file_info(pafs.FileSelector(base)):
        if info.path.endswith(".json") and not posixpath.basename(info.path).startswith("_"):
            with fs.open_input_stream(info.path) as f:
                events.append(AliasEvent(**json.loads(f.read())))
    return sorted(events, key=lambda e: e.seq)


def in_force(lake: Lake, ds: str, alias: str = CHAMPION) -> AliasEvent | None:
    """The alias's event in force for night `ds`: the newest one decided before `ds`."""
    parse_ds(ds)
    found = None
    for event in history(lake):
        if event.alias == alias and event.ds < ds:
            found = event
    return found if found and found.version is not None else None


def next_seq(lake: Lake) -> int:
    """The sequence number of the next event: one more than the largest so far, published or claimed."""
    return max([e.seq for e in history(lake)] + _claimed(lake), default=0) + 1


class SeqTaken(RuntimeError):
    """Another alias move claimed this sequence number first (the moves were not serialised)."""


def _claims(lake: Lake) -> str:
    return posixpath.join(_dir(lake), "_seq")


def _claimed(lake: Lake) -> list[int]:
    found = []
    for info in lake.fs.get_file_info(pafs.FileSelector(_claims(lake), allow_not_found=True)):
        name = posixpath.basename(info.path)
        if name.isdigit():
            found.append(int(name))
    return found


def append(lake: Lake, event: AliasEvent) -> None:
    publish(lake, stage(lake, event))


def stage(lake: Lake, event: AliasEvent) -> str:
    """Write an event where readers do not look; returns its staged path."""
    fs, base = lake.fs, _dir(lake)
    fs.create_dir(base, recursive=True)
    # Put-if-absent: two moves that both read the same history cannot both take its next seq, even where
    # the lake's lock is a lease (object stores); the loser fails before MLflow moves anything.
    if not lake.claim(posixpath.join(_claims(lake), f"{event.seq:06d}"), json.dumps(asdict(event)).encode()):
        raise SeqTaken(f"alias history: seq {event.seq} was claimed by another alias move at the same time "
                       f"(registry/aliases/_seq/{event.seq:06d} in {lake.uri}); nothing was moved, rerun the move")
    name = f"{event.seq:06d}-{event.ds}-{event.alias}-{uuid.uuid4().hex[:8]}.json"
    tmp = posixpath.join(base, _PENDING + name)
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(asdict(event), sort_keys=True).encode())
    return tmp


def publish(lake: Lake, staged: str) -> None:
    """Make a staged event part of the history (a rename: atomic on one filesystem)."""
    lake.fs.move(staged, posixpath.join(posixpath.dirname(staged), posixpath.basename(staged)[len(_PENDING):]))


def discard(lake: Lake, staged: str) -> None:
    """Drop a staged event that MLflow never made, and release its seq's claim (moves are serialised by the
    lake's lock, so the next move may take that seq again: the history keeps no gap for a move that never was)."""
    name = posixpath.basename(staged)
    seq = name[len(_PENDING):].split("-", 1)[0] if name.startswith(_PENDING) else ""
    for path in (staged, *([posixpath.join(_claims(lake), seq)] if seq.isdigit() else [])):
        try:
            lake.fs.delete_file(path)
        except FileNotFoundError:
            pass


def pending(lake: Lake) -> list[tuple[str, AliasEvent]]:
    """Staged events a crash left unpublished, oldest first."""
    fs, base = lake.fs, _dir(lake)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    found = []
    for info in fs.get_file_info(pafs.FileSelector(base)):
        if posixpath.basename(info.path).startswith(_PENDING):
            try:
                with fs.open_input_stream(info.path) as f:
                    found.append((info.path, AliasEvent(**json.loads(f.read()))))
            except (ValueError, TypeError):  # torn by a crash mid-write: it was never published
                discard(lake, info.path)
    return sorted(found, key=lambda p: p[1].seq)
