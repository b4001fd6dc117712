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
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "replace_path", "remove_path", "temp_sibling", "encode_attrs",
           "decode_attrs", "encode_tree_attrs", "decode_tree_attrs", "ATTR_TYPES_KEY"]


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


# --------------------------------------------------------------------------- attrs round trip
#: Attr (on every node and variable that needs it) holding ``{attr name: type tag}`` as JSON,
#: so that :func:`decode_attrs` gives back exactly the Python/numpy types that were saved.
ATTR_TYPES_KEY = "neurovar_attr_types"
_TAG = "__neurovar__"
_NATIVE_DTYPES = ("int32", "int64", "float32", "float64")
_INT64 = (-(2**63), 2**63 - 1)


def _is_int(v: Any) -> bool:
    return type(v) is int


def _to_json(value: Any, where: str, owner: str, name: str = "attrs") -> Any:
    """``value`` as a JSON-able structure with explicit tags for what JSON cannot tell apart
    (tuple, dict keys, bytes, numpy scalars and arrays)."""
    import numpy as np

    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return {_TAG: "numpy", "dtype": value.dtype.str, "value": value.item()}
    if value is None or isinstance(value, (bool, str)) or _is_int(value):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, list):
        return [_to_json(v, where, owner, name) for v in value]
    if isinstance(value, tuple):
        return {_TAG: "tuple", "items": [_to_json(v, where, owner, name) for v in value]}
    if isinstance(value, dict):
        return {_TAG: "dict", "items": [[_to_json(k, where, owner, name),
                                         _to_json(v, where, owner, name)]
                                        for k, v in value.items()]}
    if isinstance(value, (bytes, bytearray)):
        import base64

        return {_TAG: type(value).__name__, "b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufU":
        return {_TAG: "ndarray", "dtype": value.dtype.str, "shape": list(value.shape),
                "data": value.ravel().tolist()}
    from ._validation import param_error

    raise param_error(
        name, owner,
        "a container of attrs made of str, int, float, bool, None, bytes, lists, tuples, dicts and numeric, bool or "
        "str numpy scalars and arrays (so that they load back exactly)",
        f"{where} holding {type(value).__name__} {value!r}"[:240], raw=True,
        hint="Convert it (e.g. to str) or drop it. Nothing was written.",
    )


def _from_json(value: Any) -> Any:
    import numpy as np

    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(_TAG)
    if kind == "tuple":
        return tuple(_from_json(v) for v in value["items"])
    if kind == "dict":
        return {_hashable(_from_json(k)): _from_json(v) for k, v in value["items"]}
    if kind in ("bytes", "bytearray"):
        import base64

        raw = base64.b64decode(value["b64"])
        return raw if kind == "bytes" else bytearray(raw)
    if kind == "numpy":
        return np.dtype(value["dtype"]).type(value["value"])
    if kind == "ndarray":
        return np.asarray(value["data"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    return value


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def _native(value: Any) -> str | None:
    """Type tag of a value netCDF and zarr store natively (as it is, or as a 1-D array), whose
    exact type the tag restores; None when it must go through JSON."""
    import numpy as np

    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        return f"numpy:{value.dtype.name}" if value.dtype.name in _NATIVE_DTYPES else None
    if _is_int(value):
        return "int" if _INT64[0] <= value <= _INT64[1] else None
    if isinstance(value, float):
        return "float"
    if (isinstance(value, np.ndarray) and value.ndim == 1 and value.size
            and value.dtype.name in _NATIVE_DTYPES):
        return f"ndarray:{value.dtype.name}"
    if isinstance(value, (list, tuple)) and value:
        kind = type(value).__name__
        if all(type(v) is str for v in value):
            return f"{kind}:str"
        if all(_is_int(v) and _INT64[0] <= v <= _INT64[1] for v in value):
            return f"{kind}:int"
        if all(type(v) is float for v in value):
            return f"{kind}:float"
    return None


def encode_attrs(attrs: Mapping[str, Any], *, where: str = "attrs",
                 owner: str = "save_recording", name: str = "attrs") -> dict[str, Any]:
    """``attrs`` in a form netCDF (h5netcdf) and zarr store, which :func:`decode_attrs` turns
    back into exactly the values given (same types: ``int`` stays ``int``, a tuple a tuple,
    ``[]`` a list, a 2-D array a 2-D array of its dtype).

    Strings are stored as they are. Numbers, numeric 1-D arrays and non-empty lists/tuples of
    only str, only int or only float are stored natively (other tools read them as usual) and
    their type is recorded in :data:`ATTR_TYPES_KEY`. Everything else (dict, None, bool,
    bytes, empty or mixed lists, ints beyond 64 bits, arrays of other shapes or dtypes) is
    stored as a JSON string with explicit type tags. Names starting with ``_`` (netCDF
    conventions such as ``_FillValue``) are left alone.

    Raises
    ------
    InvalidParameterError
        A name that is not a str or is :data:`ATTR_TYPES_KEY`, or a value that cannot be
        stored exactly (complex, arbitrary objects); the message names the attr.
    """
    from ._validation import param_error

    out: dict[str, Any] = {}
    tags: dict[str, str] = {}
    for key, value in attrs.items():
        place = f"{where}[{key!r}]"
        if not isinstance(key, str) or key == ATTR_TYPES_KEY:
            raise param_error(name, owner, f"a container of attrs keyed by str names other "
                              f"than {ATTR_TYPES_KEY!r}", place, raw=True,
                              hint="Nothing was written.")
        if key.startswith("_") or isinstance(value, str):
            out[key] = value
            continue
        tag = _native(value)
        if tag is None:
            out[key] = json.dumps(_to_json(value, place, owner, name), allow_nan=True)
            tags[key] = "json"
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
            tags[key] = tag
    if tags:
        out[ATTR_TYPES_KEY] = json.dumps(tags, sort_keys=True)
    return out


def decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`encode_attrs` (attrs without :data:`ATTR_TYPES_KEY` come back as they
    are: files written by other tools or before this encoding)."""
    import numpy as np

    out = dict(attrs)
    raw = out.pop(ATTR_TYPES_KEY, None)
    if raw is None:
        return out
    try:
        tags = json.loads(raw)
    except (TypeError, ValueError):
        return dict(attrs)  # not ours: leave everything as it was read
    for key, tag in tags.items():
        if key not in out:
            continue
        v = out[key]
        if tag == "json":
            out[key] = _from_json(json.loads(v))
        elif tag == "int":
            out[key] = int(v)
        elif tag == "float":
            out[key] = float(v)
        elif tag.startswith("numpy:"):
            out[key] = np.dtype(tag[6:]).type(np.asarray(v).reshape(-1)[0])
        elif tag.startswith("ndarray:"):
            out[key] = np.asarray(v, dtype=tag[8:]).reshape(-1)
        elif ":" in tag:
            kind, elem = tag.split(":", 1)
            items = [v] if isinstance(v, (str, int, float, np.generic)) else list(v)
            cast = {"str": str, "int": int, "float": float}[elem]
            items = [cast(x) for x in items]
            out[key] = tuple(items) if kind == "tuple" else items
    return out


def encode_tree_attrs(tree: Any, *, owner: str = "save_recording") -> Any:
    """A copy of DataTree ``tree`` whose node and variable attrs are :func:`encode_attrs`-ed
    (data are not copied)."""
    import xarray as xr

    nodes = {}
    for node in tree.subtree:
        ds = node.to_dataset(inherit=False).copy(deep=False)
        ds.attrs = encode_attrs(ds.attrs, where=f"attrs of node {node.path!r}", owner=owner,
                                name="tree")
        for vname, var in ds.variables.items():
            var.attrs = encode_attrs(
                var.attrs, where=f"attrs of variable {vname!r} in node {node.path!r}",
                owner=owner, name="tree")
        nodes[node.path] = ds
    return xr.DataTree.from_dict(nodes, name=tree.name)


def decode_tree_attrs(tree: Any) -> Any:
    """Undo :func:`encode_tree_attrs` in place on a loaded DataTree (lazy data untouched);
    returns ``tree``."""
    for node in tree.subtree:
        node.attrs = decode_attrs(node.attrs)
        for var in node.variables.values():
            var.attrs = decode_attrs(var.attrs)
    return tree
