"""Download-once, checksum-verified cache of the public cortical data sets.

Files are looked up under ``<data_home>/<dataset>/<file name>`` in the folders of
:func:`data_home_candidates`, in order: the ``data_home`` argument if given (then only it),
else the environment variable ``NEUROVAR_DATA``, the user cache (``$XDG_CACHE_HOME/neurovar``
or ``~/.cache/neurovar``) and a ``shared/data/cortex`` folder beside the source checkout of
the package. :func:`find_data_home` is that one lookup; :func:`fetch` and every loader use it,
so a notebook run from any working directory finds the same files. A file that is present and
has the expected sha256 is used as it is and never fetched again; nothing is written in that
case, so a shared read-only data home works. A missing file, or one whose sha256 does not match (partial download,
tampering, bit rot), is (re)downloaded from the original public URL at a fixed commit into a
temporary file, verified, and only then moved into place.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REGISTRY",
    "RemoteFile",
    "data_home_candidates",
    "data_home_path",
    "fetch",
    "find_data_home",
    "sha256sum",
]

ENV_VAR = "NEUROVAR_DATA"

_COWLEY_COMMIT = "f4552ad9d34a466ebc66658f72a08a8e5038f1cf"
_COWLEY_BASE = (
    "https://raw.githubusercontent.com/cowleygroup/V4_compact_models/"
    f"{_COWLEY_COMMIT}/data_V4_responses"
)
_SEMEDO_COMMIT = "fd0e408ba2244d9369bda59f326480386c770e5c"
_SEMEDO_BASE = (
    f"https://raw.githubusercontent.com/joao-semedo/communication-subspace/{_SEMEDO_COMMIT}"
)


@dataclass(frozen=True)
class RemoteFile:
    """One public file: where it comes from and what it must hash to."""

    url: str
    sha256: str
    commit: str
    licence: str


#: name (``"<dataset>/<file>"``) -> remote location and checksum.
REGISTRY: dict[str, RemoteFile] = {
    "cowley2023_v4/responses_210325.npy": RemoteFile(
        f"{_COWLEY_BASE}/responses_raw/responses_210325.npy",
        "4008dbbf31a47d9b1b8d8da609f4a7a3433c7071f0e45c611c220b217dd75b76",
        _COWLEY_COMMIT,
        "GPL-3.0",
    ),
    "cowley2023_v4/images_210325.zip": RemoteFile(
        f"{_COWLEY_BASE}/images/images_210325.zip",
        "992774eca3508a2ad01accb1a31f5f3e3d90248c49f4eec314f2a915a263e454",
        _COWLEY_COMMIT,
        "GPL-3.0",
    ),
    "cowley2023_v4/responses_201016.npy": RemoteFile(
        f"{_COWLEY_BASE}/responses_raw/responses_201016.npy",
        "d04e4f21d546f29d17a999826f690a56bb0ef1730b184d14096d20b94237e2dd",
        _COWLEY_COMMIT,
        "GPL-3.0",
    ),
    "semedo2019_v1v2/sample_data.mat": RemoteFile(
        f"{_SEMEDO_BASE}/mat_sample/sample_data.mat",
        "37cd032962360baf5f6f7b853fea5739e6bfd9038520ec6247d9932c51634ec1",
        _SEMEDO_COMMIT,
        "MIT",
    ),
}


def data_home_path(data_home: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data home: argument, then ``$NEUROVAR_DATA``, then the user cache dir.

    Parameters
    ----------
    data_home
        Folder to use; ``None`` falls back to the environment variable ``NEUROVAR_DATA``
        (if set and non-empty), then to ``$XDG_CACHE_HOME/neurovar`` if ``XDG_CACHE_HOME`` is
        set, else ``~/.cache/neurovar``.

    Returns
    -------
    pathlib.Path
        The folder (``~`` expanded). Nothing is created here.
    """
    if data_home is not None:
        return Path(data_home).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "neurovar"


def _beside_repository() -> Path | None:
    """``<checkout>/../shared/data/cortex`` when the package runs from a source checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        return None
    return root.parent / "shared" / "data" / "cortex"


def data_home_candidates(data_home: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for the data, in order (nothing is created).

    Parameters
    ----------
    data_home
        If given, the only folder searched.

    Returns
    -------
    list of pathlib.Path
        ``[data_home]``; or ``$NEUROVAR_DATA`` (if set), the user cache
        (``$XDG_CACHE_HOME/neurovar`` or ``~/.cache/neurovar``) and, for a source checkout,
        ``shared/data/cortex`` beside the repository (where the project's machines keep a
        read-only copy). The first one is where downloads go.
    """
    if data_home is not None:
        return [Path(data_home).expanduser()]
    env = os.environ.get(ENV_VAR)
    out = [Path(env).expanduser()] if env else []
    xdg = os.environ.get("XDG_CACHE_HOME")
    out.append((Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "neurovar")
    beside = _beside_repository()
    if beside is not None:
        out.append(beside)
    unique: list[Path] = []
    for path in out:
        if path not in unique:
            unique.append(path)
    return unique


def find_data_home(
    name: str | None = None, *, data_home: str | os.PathLike[str] | None = None
) -> Path:
    """The data home that holds ``name``: the one lookup every loader and notebook uses.

    Parameters
    ----------
    name
        A registered file ``"<dataset>/<file>"`` or a dataset folder (``"cowley2023_v4"``);
        ``None`` looks for any registered file.
    data_home
        If given, returned as it is (``~`` expanded).

    Returns
    -------
    pathlib.Path
        The first of :func:`data_home_candidates` in which ``<home>/<name>`` exists (any
        registered file when ``name`` is None); if none has it, the first candidate, where
        :func:`fetch` would download to. Existence is checked here, the sha256 by
        :func:`fetch`.
    """
    candidates = data_home_candidates(data_home)
    names = [name] if name is not None else list(REGISTRY)
    for home in candidates:
        if any((home / n).exists() for n in names):
            return home
    return candidates[0]


def sha256sum(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest (FIPS 180-4) of a file, read in chunks of ``chunk_size`` bytes.

    Parameters
    ----------
    path
        File to hash.
    chunk_size
        Bytes read at a time (memory stays bounded for large files).

    Returns
    -------
    str
        64 lowercase hex digits, as printed by ``sha256sum``.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, dest: Path) -> None:
    """Stream ``url`` to ``dest`` (tests replace this function; nothing else downloads)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as fh:  # noqa: S310
        while True:
            block = response.read(1 << 20)
            if not block:
                break
            fh.write(block)


def fetch(name: str, *, data_home: str | os.PathLike[str] | None = None) -> Path:
    """Return the local path of a registered file, downloading and verifying it if needed.

    Parameters
    ----------
    name
        Registered name ``"<dataset>/<file>"``, one of :data:`REGISTRY`'s keys, e.g.
        ``"cowley2023_v4/responses_210325.npy"``.
    data_home
        Cache folder; default: search :func:`data_home_candidates` (``$NEUROVAR_DATA``, the
        user cache, ``shared/data/cortex`` beside the checkout) and download, if needed, into
        the first.

    Returns
    -------
    pathlib.Path
        Path of a file whose sha256 equals the registered one.

    Raises
    ------
    ValueError
        If ``name`` is not registered.
    OSError
        If the file is missing or corrupt and cannot be downloaded, or the download itself
        does not have the registered sha256 (it is then discarded, never used).

    Notes
    -----
    A valid file is never re-fetched and never written to, so a read-only shared data home
    works. A file with the wrong sha256 is reported with a warning and replaced atomically
    (download to a temporary file in the same folder, verify, ``os.replace``).
    """
    if name not in REGISTRY:
        raise ValueError(
            f"The 'name' parameter must be one of {sorted(REGISTRY)!r}. Got {name!r} instead."
        )
    remote = REGISTRY[name]
    candidates = data_home_candidates(data_home)
    path = candidates[0] / name
    found = sha256sum(path) if path.is_file() else None
    if found == remote.sha256:
        return path
    for home in candidates[1:]:  # a verified copy elsewhere in the lookup is used as it is
        other = home / name
        if other.is_file() and sha256sum(other) == remote.sha256:
            if found is not None:
                warnings.warn(
                    f"{path} has sha256 {found}, expected {remote.sha256} (corrupt or partial "
                    f"file); using the verified copy {other} instead.",
                    stacklevel=2,
                )
            return other
    if found is not None:
        warnings.warn(
            f"{path} has sha256 {found}, expected {remote.sha256} (corrupt or partial file); "
            f"downloading it again from {remote.url}.",
            stacklevel=2,
        )
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
            os.close(fd)
        except OSError as err:
            raise OSError(
                f"Cannot write {name!r} into the data home {path.parent} ({err}). Point "
                f"'data_home' (or ${ENV_VAR}) at a writable folder, or place a verified copy "
                "there."
            ) from err
        tmp = Path(tmp_name)
        try:
            try:
                _download(remote.url, tmp)
            except Exception as err:
                raise OSError(
                    f"Downloading {remote.url} failed ({err}). Without network access, put the "
                    f"file at {path} (sha256 {remote.sha256}); folders searched: "
                    f"{[str(c) for c in candidates]}."
                ) from err
            got = sha256sum(tmp)
            if got != remote.sha256:
                raise OSError(
                    f"The download of {remote.url} has sha256 {got}, expected {remote.sha256}; "
                    "it was discarded."
                )
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    except BaseException:
        for folder in created:  # deepest first: a failed fetch leaves no empty folders
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return path
