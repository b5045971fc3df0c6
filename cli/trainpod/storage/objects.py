"""Single objects by URI (markers, status, logs) and the change-driven upload of live files."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from trainpod.errors import TrainpodError
from trainpod.storage.stores import Store, open_store
from trainpod.storage.uri import _split_parent

if TYPE_CHECKING:
    from trainpod.settings import Settings


# ======================================================================================= single objects
def exists(uri: str, settings: Settings | None = None) -> bool:
    parent, name = _split_parent(uri)
    return open_store(parent, settings).exists(name)


def read_bytes(uri: str, settings: Settings | None = None) -> bytes | None:
    """Whole object (markers, status, logs), or None when it does not exist."""
    parent, name = _split_parent(uri)
    return open_store(parent, settings).read_bytes(name)


def write_bytes(uri: str, data: bytes, settings: Settings | None = None) -> None:
    """Write one object atomically (S3 PUTs are atomic; local files use temp + rename)."""
    parent, name = _split_parent(uri)
    open_store(parent, settings).write_bytes(name, data)


def ship_changed(store: Store, root: Path, rels: Iterable[str], sent: dict[str, tuple[int, ...]],
                 on_error: Callable[[str, Exception], None] | None = None) -> None:
    """Upload each of ``rels`` (relative to ``root``) whose size, mtime or ctime changed since ``sent`` last
    recorded it (ctime: a rewrite that put the mtime back is still a change).

    For the few small files a live view reads (logs, status.json), every few seconds: mtime is a change hint for
    these only, never a sync decision. Missing files are skipped; ``on_error`` gets a file's upload error and the
    others are still tried (without it the error is raised)."""
    for rel in rels:
        path = root / rel
        try:
            st = path.stat()
            seen = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if sent.get(rel) == seen:
                continue
            store.write_bytes(rel, path.read_bytes())
            sent[rel] = seen
        except FileNotFoundError:
            continue
        except (OSError, TrainpodError) as exc:
            if on_error is None:
                raise
            on_error(rel, exc)


def delete(uri: str, settings: Settings | None = None) -> None:
    """Delete one object, or everything under a prefix/directory."""
    parent, name = _split_parent(uri)
    store = open_store(parent, settings)
    keys = list(store.list(name))
    if keys:
        store.delete(keys)
