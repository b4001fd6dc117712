import numpy as np
import pytest
import xarray as xr

from neurovar.cortex.cache import REGISTRY
from neurovar.cortex.loaders import (
    from_array,
    load_cowley_v4,
    load_cowley_v4_images,
    load_semedo_v1v2,
    require_counts,
)
from neurovar.dims import RESPONSE_DIMS


def test_cowley_v4_shape_coords_and_nan_pattern(cortex_dir):
    da = load_cowley_v4(data_home=cortex_dir)
    assert da.dims == RESPONSE_DIMS
    assert da.shape == (10, 640, 50)
    raw = np.load(cortex_dir / "cowley2023_v4" / "responses_210325.npy")
    np.testing.assert_array_equal(da.values, raw.transpose(2, 1, 0))  # transposed, not altered
    valid = ~np.isnan(da.values)
    # one NaN pattern for all neurons, NaN only in trailing repeat slots
    assert (valid == valid[:, :, :1]).all()
    n_rep = valid[:, :, 0].sum(axis=0)
    np.testing.assert_array_equal(da["n_repeats"].values, n_rep)
    assert (valid[:, :, 0] == (np.arange(10)[:, None] < n_rep[None, :])).all()
    assert n_rep.min() == 6 and n_rep.max() == 10 and int(np.round(n_rep.mean())) == 8
    assert np.nanmin(da.values) == 0 and np.all(np.nan_to_num(da.values) % 1 == 0)
    assert da["image_file"].values[0] == "image0001.jpg"
    assert da["image_file"].values[-1] == "image0640.jpg"
    assert set(da["area"].values) == {"V4"}
    assert da.attrs["count_window"] == "100 ms" and da.attrs["units"] == "spike count"
    assert da.attrs["sha256"] == REGISTRY["cowley2023_v4/responses_210325.npy"].sha256
    assert da.attrs["mean_subtracted"] == 0 and "Cowley" in da.attrs["citation"]
    require_counts(da)  # counts: allowed


def test_cowley_v4_other_session_has_no_images(cortex_dir):
    da = load_cowley_v4("201016", data_home=cortex_dir)
    # the shared README says 900 images; the file holds 600 (checked, reported)
    assert da.shape == (10, 600, 82)
    assert da.attrs["images_available"] == 0
    with pytest.raises(ValueError, match="'session' parameter.*public images"):
        load_cowley_v4_images("201016", data_home=cortex_dir)
    with pytest.raises(ValueError, match="'session' parameter"):
        load_cowley_v4("190923", data_home=cortex_dir)


def test_cowley_v4_images(cortex_dir):
    import zipfile

    from PIL import Image

    images = load_cowley_v4_images(data_home=cortex_dir)
    assert tuple(images.shape) == (640, 3, 112, 112)
    assert str(images.dtype) == "torch.float32"
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    # image i is image{i+1:04d}.jpg
    with zipfile.ZipFile(cortex_dir / "cowley2023_v4" / "images_210325.zip") as zf:
        name = [n for n in zf.namelist() if n.endswith("image0123.jpg")][0]
        with zf.open(name) as fh:
            ref = np.asarray(Image.open(fh).convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_allclose(images[122].numpy().transpose(1, 2, 0), ref)
    assert not np.allclose(images[121].numpy(), images[122].numpy())


def test_semedo_shapes_residuals_and_fano_refused(cortex_dir):
    data = load_semedo_v1v2(data_home=cortex_dir)
    v1, v2 = data["V1"], data["V2"]
    assert v1.dims == RESPONSE_DIMS and v1.shape == (400, 10, 110) and v2.shape == (400, 10, 31)
    assert (v1["population"].values == "X").sum() == 79
    assert (v1["population"].values == "Y_V1").sum() == 31
    np.testing.assert_array_equal(v1["time_bin"].values, np.arange(10))
    assert not np.isnan(v1.values).any()
    # residuals about the per-bin mean: zero mean over trials in every bin, steps of 1/400
    np.testing.assert_allclose(v1.mean("trial").values, 0, atol=1e-9)
    frac = (v1.values * 400) % 1
    assert np.all(np.minimum(frac, 1 - frac) < 1e-6)
    assert v1.attrs["mean_subtracted"] == 1 and isinstance(v1.attrs["mean_subtracted"], int)
    with pytest.raises(ValueError, match="mean-subtracted"):
        require_counts(v1)
    summed = load_semedo_v1v2(data_home=cortex_dir, bins="summed")["V1"]
    assert summed.shape == (400, 1, 110)
    np.testing.assert_allclose(summed.values[:, 0], v1.sum("stimulus").values)
    with pytest.raises(ValueError, match="'bins' parameter"):
        load_semedo_v1v2(data_home=cortex_dir, bins="mean")


def test_semedo_attrs_survive_netcdf(cortex_dir, tmp_path):
    v2 = load_semedo_v1v2(data_home=cortex_dir)["V2"]
    v2.to_netcdf(tmp_path / "v2.nc", engine="h5netcdf")
    back = xr.load_dataarray(tmp_path / "v2.nc", engine="h5netcdf")
    assert back.attrs["mean_subtracted"] == 1
    with pytest.raises(ValueError, match="mean-subtracted"):
        require_counts(back)


def test_from_array_unequal_repeats_are_nan_padded():
    rng = np.random.default_rng(0)
    per_stim = [rng.poisson(3, size=(n, 4)).astype(float) for n in (5, 3, 7)]
    da = from_array(per_stim, area="V1", count_window="200 ms", stimulus_ids=["a", "b", "c"])
    assert da.dims == RESPONSE_DIMS and da.shape == (7, 3, 4)
    np.testing.assert_array_equal(da["n_repeats"].values, [5, 3, 7])
    for s, block in enumerate(per_stim):
        np.testing.assert_array_equal(da.values[: len(block), s], block)
        assert np.isnan(da.values[len(block) :, s]).all()
    assert da.attrs["count_window"] == "200 ms" and list(da["area"].values) == ["V1"] * 4


def test_from_array_dims_order_and_errors():
    counts = np.arange(2 * 3 * 4, dtype=float).reshape(4, 3, 2)  # unit, stimulus, trial
    da = from_array(counts, dims=("unit", "stimulus", "trial"))
    assert da.shape == (2, 3, 4)
    assert da.values[1, 2, 3] == counts[3, 2, 1]
    with pytest.raises(ValueError, match="'dims' parameter"):
        from_array(counts, dims=("neuron", "stimulus", "trial"))
    with pytest.raises(ValueError, match="'counts' parameter"):
        from_array(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="'unit_ids' parameter of from_array must have length 4"):
        from_array(counts, dims=("unit", "stimulus", "trial"), unit_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="same number of units"):
        from_array([np.zeros((2, 3)), np.zeros((4, 2))])


def test_from_array_equal_repeats_still_checks_units_and_dims():
    # equal repeat counts but different unit counts: a clear error, not a numpy stack error
    with pytest.raises(ValueError, match="same number of units"):
        from_array([np.zeros((3, 4)), np.zeros((3, 5))])
    # equal repeats: same result as the padded path, nothing padded
    blocks = [np.full((3, 2), float(s)) for s in range(4)]
    da = from_array(blocks)
    assert da.shape == (3, 4, 2) and not np.isnan(da.values).any()
    np.testing.assert_array_equal(da.values[:, 2], blocks[2])
    # 'dims' cannot silently be ignored for per-stimulus blocks
    with pytest.raises(ValueError, match="'dims' parameter"):
        from_array(blocks, dims=("unit", "trial", "stimulus"))
    with pytest.raises(
        ValueError, match="'counts' parameter of from_array must be a sequence of 2-d"
    ):
        from_array([np.zeros((3, 2)), np.zeros(3)])
