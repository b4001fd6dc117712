"""Atomic writes: nothing a user already wrote is lost when a new write fails.

:func:`atomic_path` yields a temporary sibling of the target (same folder, so the final rename
stays on one file system); the caller writes the file or directory there; on success it is
renamed into place (:func:`os.replace` for files; for directories the old one is first moved
aside, the new one renamed in, and only then the old one deleted). On any exception (or
``KeyboardInterrupt``) the temporary sibling is removed and the target is exactly as before.
A process killed with ``SIGKILL`` can leave a hidden ``.<name>.tmp-<id>`` sibling behind, never
a damaged target.

Example
-------
>>> with atomic_path("results/run1", overwrite=True) as tmp:
...     tmp.mkdir()
...     (tmp / "table.csv").write_text("a,b\\n1,2\\n")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "replace_path", "remove_path", "temp_sibling"]


def temp_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """A fresh, non-existing hidden path next to ``path``: ``.<name>.<tag>-<random>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}")


def remove_path(path: str | os.PathLike) -> None:
    """Delete a file, link or directory tree; a missing path is fine."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    make_parents: bool = True,
    owner: str = "atomic_path",
) -> Iterator[Path]:
    """Write ``path`` (a file or a directory) all-or-nothing.

    Parameters
    ----------
    path
        Final location.
    overwrite
        Replace an existing ``path`` (only once the new content is complete). When False an
        existing ``path`` is a :class:`FileExistsError` before anything is written (checked
        again at the end, in case it appeared meanwhile).
    make_parents
        Create missing parent folders first.
    owner
        Function named in error messages.

    Yields
    ------
    pathlib.Path
        A temporary sibling that does not exist yet: create the file or directory there.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        The block finished without creating anything at the yielded path.
    """
    from ._validation import check_bool

    overwrite = check_bool(overwrite, name="overwrite", owner=owner)
    path = Path(path)
    if _exists(path) and not overwrite:
        raise FileExistsError(
            f"{owner}: {str(path)!r} already exists; pass overwrite=True to replace it. "
            "Nothing was written."
        )
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        if not _exists(tmp):
            raise FileNotFoundError(
                f"{owner}: nothing was written to the temporary path {str(tmp)!r}."
            )
        if _exists(path) and not overwrite:
            raise FileExistsError(
                f"{owner}: {str(path)!r} appeared while writing; the new content was discarded."
            )
        replace_path(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise


def replace_path(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move ``src`` onto ``dst``, replacing it (files atomically; directories by moving the old
    one aside first and deleting it only after the new one is in place)."""
    src, dst = Path(src), Path(dst)
    if not _exists(dst) or (not dst.is_dir() and not src.is_dir()):
        os.replace(src, dst)
        return
    backup = temp_sibling(dst, "old")
    os.replace(dst, backup)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(backup, dst)
        raise
    remove_path(backup)
