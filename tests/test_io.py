"""atomic_path: all-or-nothing writes of files and directories."""

from __future__ import annotations

import pytest

from neurovar._io import atomic_path
from neurovar._validation import InvalidParameterError


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_file_written_in_place_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and not tmp.exists()
        tmp.write_text("one")
        assert not target.exists()  # invisible until the block succeeds
    assert target.read_text() == "one" and _names(target.parent) == ["out.txt"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_path(target) as tmp:
            raise AssertionError("the block must not run")  # pragma: no cover
    with pytest.raises(KeyError):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_text("two, half")
            raise KeyError("fail")
    assert target.read_text() == "one" and _names(target.parent) == ["out.txt"]
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("two")
    assert target.read_text() == "two"


def test_directory_replaced_only_on_success(tmp_path):
    target = tmp_path / "results"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.csv").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.mkdir()
            (tmp / "b.csv").write_text("2")
            raise KeyboardInterrupt
    assert _names(target) == ["a.csv"] and _names(tmp_path) == ["results"]
    with atomic_path(target, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "b.csv").write_text("2")
    assert _names(target) == ["b.csv"] and _names(tmp_path) == ["results"]


def test_nothing_written_and_string_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "x"):
            pass
    with pytest.raises(InvalidParameterError, match="'overwrite' parameter of atomic_path"):
        with atomic_path(tmp_path / "x", overwrite="False"):
            pass  # pragma: no cover
    assert _names(tmp_path) == []


# ----------------------------------------------------------------- attrs that load back exactly
def _attr_cases():
    import numpy as np

    return {
        "int": 3, "neg_int": -7, "zero": 0, "float": 1.5, "nan": float("nan"),
        "inf": float("inf"), "str": "relu3", "empty_str": "", "unicode": "V4 — é",
        "big_int": 2**70, "neg_big_int": -(2**65), "int64_edge": 2**63 - 1,
        "bool": True, "false": False, "none": None,
        "dict": {"kind": "isotropic", "scale": 0.5, "layers": ["a", "b"], 3: (1, 2)},
        "nested": [[1, 2], [3]], "mixed": [1, "a", 2.5], "list_bool": [True, False],
        "empty_list": [], "empty_tuple": (), "tuple_int": (1, 2), "tuple_str": ("a",),
        "list_int": [1, 2, 3], "list_one_int": [4], "list_float": [0.5, 1.5],
        "list_str": ["a", "b"], "list_one_str": ["a"], "list_big": [1, 2**64],
        "np_int64": np.int64(5), "np_int32": np.int32(-2), "np_float32": np.float32(0.25),
        "np_float64": np.float64(2.5), "np_uint8": np.uint8(7), "np_bool": np.bool_(True),
        "np_float16": np.float16(0.5),
        "arr_f64": np.array([1.0, np.nan]), "arr_i32": np.array([1, 2], dtype=np.int32),
        "arr_one": np.array([7.0]), "arr_2d": np.arange(6.0).reshape(2, 3),
        "arr_empty": np.zeros(0), "arr_bool": np.array([True, False]),
        "arr_str": np.array(["x", "yz"]), "arr_0d": np.array(3.0),
        "bytes": b"\x00\xffabc", "bytearray": bytearray(b"xy"),
    }


def _same(a, b) -> bool:
    import numpy as np

    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (float, np.floating)) and np.isnan(a):
        return bool(np.isnan(b))
    return bool(a == b)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_attrs_round_trip_exactly_through_netcdf_and_zarr(tmp_path, suffix):
    import numpy as np
    import xarray as xr

    from neurovar._io import decode_tree_attrs, encode_tree_attrs

    cases = _attr_cases()
    layer = xr.Dataset({"activation": (("trial", "unit"), np.ones((2, 3)), dict(cases))},
                       coords={"unit": ("unit", [0, 1, 2], {"ids": (1, 2)})},
                       attrs=dict(cases))
    tree = xr.DataTree.from_dict({"/": xr.Dataset(attrs=dict(cases)), "/relu3": layer})
    encoded = encode_tree_attrs(tree)
    assert _same(tree.attrs["tuple_int"], (1, 2))  # the tree given is not changed
    path = tmp_path / f"rec{suffix}"
    if suffix == ".nc":
        encoded.to_netcdf(path, engine="h5netcdf")
        back = xr.open_datatree(path, engine="h5netcdf")
    else:
        encoded.to_zarr(path, consolidated=False)
        back = xr.open_datatree(path, engine="zarr", consolidated=False)
    back = decode_tree_attrs(back)
    for got in (back.attrs, back["relu3"].attrs, back["relu3"]["activation"].attrs):
        wrong = {k: (v, got.get(k)) for k, v in cases.items() if not _same(v, got.get(k))}
        assert not wrong, wrong
        assert set(got) == set(cases)  # no bookkeeping attr left behind
    assert back["relu3"]["unit"].attrs["ids"] == (1, 2)
    np.testing.assert_array_equal(back["relu3"]["activation"].values, np.ones((2, 3)))


def test_attrs_that_cannot_be_stored_are_refused_naming_them():
    import numpy as np

    from neurovar._io import ATTR_TYPES_KEY, encode_attrs

    for bad in (object(), 1 + 2j, {1, 2}, np.array([1 + 1j]), [1, object()]):
        with pytest.raises(InvalidParameterError, match=r"'attrs' parameter of save_recording.*"
                           r"attrs\['weird'\]"):
            encode_attrs({"ok": 1, "weird": bad})
    with pytest.raises(InvalidParameterError, match=ATTR_TYPES_KEY):
        encode_attrs({ATTR_TYPES_KEY: "{}"})
    import xarray as xr

    from neurovar._io import encode_tree_attrs

    tree = xr.DataTree.from_dict({"/l": xr.Dataset({"v": ("x", [1.0], {"w": 1j})})})
    with pytest.raises(InvalidParameterError, match=r"'tree' parameter of save_recording.*"
                       r"attrs of variable 'v' in node '/l'\['w'\] holding complex"):
        encode_tree_attrs(tree)
    with pytest.raises(InvalidParameterError, match="keyed by str"):
        encode_attrs({3: "x"})


def test_plain_attrs_stay_readable_by_other_tools_and_old_files_decode_unchanged():
    import numpy as np

    from neurovar._io import ATTR_TYPES_KEY, decode_attrs, encode_attrs

    enc = encode_attrs({"layer": "relu3", "seed": 3, "eps": [0.1, 0.2], "noise": {"m": 1}})
    assert enc["layer"] == "relu3" and enc["seed"] == 3 and enc["eps"] == [0.1, 0.2]
    assert isinstance(enc["noise"], str) and ATTR_TYPES_KEY in enc
    assert "layer" not in encode_attrs({"layer": "x", "s": 1})[ATTR_TYPES_KEY]
    assert ATTR_TYPES_KEY not in encode_attrs({"layer": "x"})  # nothing to record
    old = {"seed": np.int64(3), "eps": np.array([0.1])}
    assert decode_attrs(old) == old
