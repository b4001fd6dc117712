"""Resuming an interrupted recording store: exact, and only for the call that started it.

``record_activations(..., store=path, resume=True)`` continues at the first unwritten chunk with
the random states saved after the last chunk written, so the finished store equals an
uninterrupted recording bit for bit (issue 12: nothing a user wrote is ever lost).
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from store_helpers import kill_after_chunks

from neurovar._validation import InvalidParameterError
from neurovar.record import (
    IncompleteRecordingError,
    load_recording,
    record_activations,
    save_recording,
)
from neurovar.record import _record as record_module

# Built the same way here and in the killed subprocess: dropout in train mode, plain noise at
# relu2 (where trials branch) and noise with a running estimate at relu3 (relative_scale,
# tracked in train mode, so a chunk's noise depends on the chunks before it).
MODEL_SRC = textwrap.dedent(
    """
    import torch
    from neurovar.models import SmallCNN
    from neurovar.noise import IsotropicNoise, inject_noise

    def make_model(noise_rng=(1, 2)):
        model = SmallCNN(channels=(2, 2), hidden=4, n_classes=3, dropout=0.5).train()
        inject_noise(
            model,
            {
                "relu2": IsotropicNoise(0.3, rng=noise_rng[0]),
                "relu3": IsotropicNoise(1.0, relative_scale=0.5, rng=noise_rng[1]),
            },
        )
        return model

    def make_images(n=8):
        return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    """
)
_ns: dict = {}
exec(MODEL_SRC, _ns)  # noqa: S102  (the one definition shared with the subprocess)
make_model, make_images = _ns["make_model"], _ns["make_images"]

LAYERS = ["conv1", "fc1", "dropout", "fc2"]
# (n_trials, batch_size): 2 stimuli x 2 trials per pass (one pass a chunk), or 1 stimulus with
# its 4 trials split over 2 passes (an interruption can fall in the middle of a chunk)
LAYOUTS = {"chunk_of_2_stimuli": (2, 4), "trials_split": (4, 2)}


class RaiseAfter:
    """Forward hook that raises on its ``n``-th call (a recording failing mid-way)."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, module, inp, out):
        self.calls += 1
        if self.calls > self.n:
            raise RuntimeError("boom: simulated failure")


def _fail_to_write(*args):
    raise RuntimeError("boom: disk full (simulated)")


class Count:
    def __init__(self):
        self.calls = 0

    def __call__(self, module, inp, out):
        self.calls += 1


def _kw(layout, rng):
    n_trials, batch_size = LAYOUTS[layout]
    return dict(layers=LAYERS, n_trials=n_trials, batch_size=batch_size, rng=rng, progress=False)


def _root(path: Path) -> dict:
    import zarr

    return dict(zarr.open_group(str(path), mode="r").attrs)


def _files(path: Path) -> dict[str, str]:
    """sha256 of every file of a store, by relative path."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _interrupt(model, images, path, after, **kw):
    """Record into ``path`` and fail on forward pass ``after + 1``; returns chunks written."""
    hook = model.fc2.register_forward_hook(RaiseAfter(after))
    try:
        with pytest.raises(RuntimeError, match="boom"):
            record_activations(model, images, store=path, **kw)
    finally:
        hook.remove()
    return int(_root(path)["neurovar_chunks_written"])


def _assert_same(got: xr.DataTree, ref: xr.DataTree) -> None:
    for name in LAYERS:
        assert np.array_equal(
            got[name]["activation"].values, ref[name]["activation"].values, equal_nan=True
        ), name
    xr.testing.assert_identical(got.load(), ref.load())


def _streams(model):
    from neurovar._torch import noise_modules

    return [
        {k: v.clone() for k, v in m.get_rng_state()["streams"].items()}
        for m in noise_modules(model)
    ]


def _buffers(model):
    from neurovar._torch import noise_modules

    return [[b.clone() for b in m.buffers()] for m in noise_modules(model)]


def _same_tensors(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


# ---------------------------------------------------------------------------------- exact
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("rng", [0, None], ids=["rng=0", "rng=None"])
@pytest.mark.parametrize("after", [0, 3], ids=["in_first_write", "mid_way"])
def test_resume_after_exception_is_exact(
    layout, rng, after, tmp_path, monkeypatch, global_rng_guard
):
    images = make_images()
    kw = _kw(layout, rng)
    model = make_model()
    path = tmp_path / "rec.zarr"
    if after == 0:  # the store is started, then writing the first chunk fails
        with monkeypatch.context() as patch:
            patch.setattr(record_module, "_write_region", _fail_to_write)
            written = _interrupt(model, images, path, 10**6, **kw)
        # a resume failing before its first chunk is ready keeps that store as it was
        before = _files(path)
        _interrupt(model, images, path, 0, resume=True, **kw)
        assert _files(path) == before
    else:
        written = _interrupt(model, images, path, after, **kw)
    n_chunks = int(_root(path)["neurovar_n_chunks"])
    assert written == (0 if after == 0 else (3 if layout == "chunk_of_2_stimuli" else 1))
    assert written < n_chunks
    if rng is None:
        # rng=None resumes with the seed the store was started with: the references use it too
        # (dropout), while the noise modules draw from their own streams
        seed = int(_root(path)["seed"])
        monkeypatch.setattr(record_module, "seed_from", lambda _rng: seed)
    ref_model, disk_model = make_model(), make_model()
    mem = record_activations(ref_model, images, **kw)
    disk = record_activations(disk_model, images, store=tmp_path / "ref.zarr", **kw)
    monkeypatch.undo()

    got = record_activations(model, images, store=path, resume=True, **kw)
    _assert_same(got, mem)
    _assert_same(got, disk)
    assert _files(path) == _files(tmp_path / "ref.zarr")  # the finished stores, byte for byte
    # the noise modules end where an uninterrupted call leaves them: running estimates
    # restored, streams restored (rng given) or advanced exactly as far (rng=None)
    assert _same_tensors(_buffers(model), _buffers(ref_model))
    assert _same_tensors(_streams(model), _streams(ref_model))
    if rng is None:
        assert not _same_tensors(_streams(model), _streams(make_model()))


def test_resume_after_sigkill_is_exact(tmp_path):
    """A real ``kill -9`` of a recording subprocess; this process finishes the store."""
    path = tmp_path / "killed.zarr"
    kw = dict(layers=LAYERS, n_trials=2, batch_size=4, rng=5, progress=False)
    child = MODEL_SRC + textwrap.dedent(
        f"""
        import sys, time
        from neurovar.record import record_activations
        model = make_model()
        model.fc2.register_forward_hook(lambda m, i, o: time.sleep(0.25))
        record_activations(model, make_images(40), store=sys.argv[1], **{kw!r})
        """
    )
    kill_after_chunks(child, path, 2)
    with pytest.raises(IncompleteRecordingError, match=r"resume=True"):
        load_recording(path)
    written = int(_root(path)["neurovar_chunks_written"])
    assert 2 <= written < 20
    images = make_images(40)
    mem = record_activations(make_model(), images, **kw)
    got = record_activations(make_model(), images, store=path, resume=True, **kw)
    _assert_same(got, mem)
    assert "neurovar_complete" not in got.attrs


def test_failed_resume_keeps_its_chunks_and_resumes_again(tmp_path):
    images = make_images()
    kw = _kw("trials_split", 3)
    path = tmp_path / "rec.zarr"
    model = make_model()
    first = _interrupt(model, images, path, 2, **kw)  # 1 chunk of 2 passes, then a failure
    second = _interrupt(model, images, path, 5, resume=True, **kw)  # resumed, fails again
    assert (first, second) == (1, 1 + 2)
    with pytest.raises(IncompleteRecordingError, match=r"5 of 8 stimuli"):
        load_recording(path)
    got = record_activations(model, images, store=path, resume=True, **kw)
    _assert_same(got, record_activations(make_model(), images, **kw))


# ---------------------------------------------------------------------------------- refusals
def _changed(what, images, kw, model):
    if what == "stimuli":
        return model, images * 0.5, kw
    if what == "n_trials":
        return model, images, {**kw, "n_trials": kw["n_trials"] + 1}
    if what == "seed":
        return model, images, {**kw, "rng": 1}
    if what == "rng=None":
        return model, images, {**kw, "rng": None}
    if what == "layers":
        return model, images, {**kw, "layers": LAYERS[:2]}
    if what == "labels":
        return model, images, {**kw, "labels": np.arange(len(images)) % 3}
    if what == "noise std":
        # (with rng given the modules' own seeds do not matter: they are reseeded from rng)
        from neurovar._torch import noise_modules

        other = make_model()
        noise_modules(other)[0].std = 0.4
        return other, images, kw
    assert what == "weights"
    with torch.no_grad():
        model.fc1.weight[0, 0] += 1e-3
    return model, images, kw


WORDS = {
    "stimuli": "the stimuli differ from those the store was started with",
    "n_trials": r"n_trials differs \(the store: 2, this call: 3\)",
    "seed": r"the seed differs \(the store: 0, this call: 1\)",
    "rng=None": r"the seed differs \(the store: 0, this call: rng=None\)",
    "layers": "the layers differ",
    "labels": "the labels or stimulus_coords differ",
    "noise std": "the noise configuration",
    "weights": "the model's weights or buffers differ",
}


@pytest.mark.parametrize("complete", [False, True], ids=["incomplete", "complete"])
@pytest.mark.parametrize("what", list(WORDS))
def test_resume_of_another_call_is_refused_and_touches_nothing(what, complete, tmp_path):
    images = make_images()
    kw = _kw("chunk_of_2_stimuli", 0)
    model = make_model()
    path = tmp_path / "rec.zarr"
    if complete:
        record_activations(model, images, store=path, **kw)
    else:
        _interrupt(model, images, path, 2, **kw)
    before = _files(path)
    model, images2, kw2 = _changed(what, images, kw, model)
    counter = Count()
    model.conv1.register_forward_hook(counter)
    with pytest.raises(InvalidParameterError, match=WORDS[what]) as info:
        record_activations(model, images2, store=path, resume=True, **kw2)
    assert "'resume' parameter of record_activations" in str(info.value)
    assert "overwrite=True" in str(info.value)
    assert counter.calls == 0
    assert _files(path) == before  # not a byte changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.zarr"]


def test_resume_of_a_complete_store_recomputes_nothing(tmp_path):
    images = make_images()
    kw = _kw("chunk_of_2_stimuli", 0)
    model = make_model()
    path = tmp_path / "rec.zarr"
    done = record_activations(model, images, store=path, **kw).load()
    before = _files(path)
    counter = Count()
    hook = model.conv1.register_forward_hook(counter)
    again = record_activations(model, images, store=path, resume=True, **kw)
    hook.remove()
    assert counter.calls == 0  # no probe, no trial pass
    xr.testing.assert_identical(again.load(), done)
    assert _files(path) == before
    # and a counting hook does see the passes of a real recording
    hook = model.conv1.register_forward_hook(counter)
    record_activations(model, images, store=tmp_path / "other.zarr", **kw)
    hook.remove()
    assert counter.calls > 0


def test_resume_without_a_store_records_as_usual(tmp_path):
    images = make_images()
    kw = _kw("chunk_of_2_stimuli", 0)
    got = record_activations(make_model(), images, store=tmp_path / "new.zarr", resume=True, **kw)
    _assert_same(got, record_activations(make_model(), images, **kw))
    _assert_same(record_activations(make_model(), images, resume=True, **kw), got)


@pytest.mark.parametrize("flag", ["True", 1, None])
def test_bad_resume_flags_are_refused(tmp_path, flag):
    images = make_images()
    kw = _kw("chunk_of_2_stimuli", 0)
    model = make_model()
    path = tmp_path / "rec.zarr"
    _interrupt(model, images, path, 2, **kw)
    before = _files(path)
    with pytest.raises(InvalidParameterError, match="'resume' parameter of record_activations"):
        record_activations(model, images, store=path, resume=flag, **kw)
    with pytest.raises(InvalidParameterError, match=r"'resume' parameter .* overwrite=True"):
        record_activations(model, images, store=path, resume=True, overwrite=True, **kw)
    with pytest.raises(InvalidParameterError, match=r"'resume' parameter .* overwrite=True"):
        record_activations(
            model, images, store=tmp_path / "x.zarr", resume=True, overwrite=True, **kw
        )
    assert _files(path) == before and not (tmp_path / "x.zarr").exists()


def test_messages_of_an_incomplete_store_offer_resume(tmp_path):
    images = make_images()
    kw = _kw("chunk_of_2_stimuli", 0)
    model = make_model()
    path = tmp_path / "rec.zarr"
    _interrupt(model, images, path, 2, **kw)
    with pytest.raises(IncompleteRecordingError, match=r"resume=True\) with the same arguments"):
        load_recording(path)
    with pytest.raises(FileExistsError, match="incomplete recording; pass resume=True"):
        record_activations(model, images, store=path, **kw)
    # a complete store is not offered a resume
    done = tmp_path / "done.zarr"
    record_activations(model, images, store=done, **kw)
    with pytest.raises(FileExistsError) as info:
        record_activations(model, images, store=done, **kw)
    assert "resume" not in str(info.value)


def test_a_store_not_from_record_activations_is_not_resumed(tmp_path):
    images = make_images()
    kw = _kw("chunk_of_2_stimuli", 0)
    tree = record_activations(make_model(), images, **kw)
    path = save_recording(tree, tmp_path / "saved.zarr")
    before = _files(path)
    with pytest.raises(InvalidParameterError, match="not one"):
        record_activations(make_model(), images, store=path, resume=True, **kw)
    assert _files(path) == before


# ---------------------------------------------------------------------------------- not exact
def test_a_generator_or_frozen_noise_module_is_not_resumable(tmp_path):
    from neurovar.models import SmallCNN
    from neurovar.noise import IsotropicNoise, frozen_noise, inject_noise

    images = make_images()
    kw = dict(layers=["fc1", "fc2"], n_trials=2, batch_size=4, progress=False)

    def gen_model():
        model = SmallCNN(channels=(2, 2), hidden=4, n_classes=3).eval()
        inject_noise(model, {"fc1": IsotropicNoise(0.2, rng=torch.Generator().manual_seed(3))})
        return model

    # rng=None: the module draws from the caller's generator, which a store cannot hold
    model = gen_model()
    path = tmp_path / "gen.zarr"
    _interrupt(model, images, path, 1, rng=None, **kw)
    before = _files(path)
    with pytest.raises(IncompleteRecordingError, match="cannot be resumed .*torch.Generator"):
        load_recording(path)
    with pytest.raises(InvalidParameterError, match=r"cannot be: .*torch\.Generator") as info:
        record_activations(model, images, store=path, resume=True, rng=None, **kw)
    assert "overwrite=True" in str(info.value)
    assert _files(path) == before
    # with an int rng the module is reseeded from it: resumable and exact
    path = tmp_path / "seeded.zarr"
    _interrupt(gen_model(), images, path, 1, rng=7, **kw)
    got = record_activations(gen_model(), images, store=path, resume=True, rng=7, **kw)
    ref = record_activations(gen_model(), images, rng=7, **kw)
    assert np.array_equal(got["fc2"]["activation"].values, ref["fc2"]["activation"].values)

    # a frozen module replays a draw that is not saved
    model = SmallCNN(channels=(2, 2), hidden=4, n_classes=3).eval()
    noise = IsotropicNoise(0.2, rng=3)
    inject_noise(model, {"fc1": noise})
    path = tmp_path / "frozen.zarr"
    with frozen_noise(noise):
        _interrupt(model, images, path, 1, rng=0, **kw)
        with pytest.raises(InvalidParameterError, match="frozen"):
            record_activations(model, images, store=path, resume=True, rng=0, **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda_is_exact(tmp_path):
    """Dropout draws from the device's CUDA generator: its state is saved and restored too."""
    images = make_images()
    kw = {**_kw("chunk_of_2_stimuli", 0), "device": "cuda"}
    path = tmp_path / "rec.zarr"
    model = make_model()
    assert _interrupt(model, images, path, 2, **kw) == 2
    got = record_activations(model, images, store=path, resume=True, **kw)
    _assert_same(got, record_activations(make_model(), images, **kw))
    with pytest.raises(InvalidParameterError, match="the device differs"):
        record_activations(model, images, store=path, resume=True, **{**kw, "device": "cpu"})


# ------------------------------------------------------------------- fingerprint details
class _ScaledNoise(torch.nn.Module):
    """A user's own noise module without neurovar's marker: only its ``std`` attribute says
    how much noise it adds."""

    def __init__(self, std):
        super().__init__()
        self.std = std

    def forward(self, x):
        return x + self.std * torch.randn_like(x)


def _noisy(x):
    """A plain function as noise (``inject_noise`` accepts any callable)."""
    return x + 0.2 * torch.randn_like(x)


def _user_noise_model(noise):
    from neurovar.models import SmallCNN
    from neurovar.noise import inject_noise

    model = SmallCNN(channels=(2, 2), hidden=4, n_classes=3).eval()
    inject_noise(model, {"relu2": noise})
    return model


def test_a_changed_attribute_of_user_noise_is_refused(tmp_path):
    images = make_images()
    kw = dict(layers=["fc2"], n_trials=2, batch_size=4, rng=0, progress=False)
    path = tmp_path / "rec.zarr"
    _interrupt(_user_noise_model(_ScaledNoise(0.1)), images, path, 1, **kw)
    before = _files(path)
    with pytest.raises(InvalidParameterError, match="noise configuration"):
        record_activations(
            _user_noise_model(_ScaledNoise(5.0)), images, store=path, resume=True, **kw
        )
    assert _files(path) == before
    ref = record_activations(_user_noise_model(_ScaledNoise(0.1)), images, **kw)
    got = record_activations(
        _user_noise_model(_ScaledNoise(0.1)), images, store=path, resume=True, **kw
    )
    assert np.array_equal(got["fc2"]["activation"].values, ref["fc2"]["activation"].values)


def test_a_changed_momentum_is_refused(tmp_path):
    from neurovar.noise import IsotropicNoise

    images = make_images()
    kw = dict(layers=["fc2"], n_trials=2, batch_size=4, rng=0, progress=False)
    path = tmp_path / "rec.zarr"

    def model(momentum):
        m = _user_noise_model(IsotropicNoise(1.0, relative_scale=0.5, momentum=momentum, rng=1))
        m.train()
        return m

    with pytest.warns(RuntimeWarning, match="relative_scale"):
        _interrupt(model(0.1), images, path, 1, **kw)
    with pytest.raises(InvalidParameterError, match="noise configuration"):
        record_activations(model(0.9), images, store=path, resume=True, **kw)


def test_function_noise_is_fingerprinted_by_name_not_address():
    """A function's repr holds a memory address, which differs in the process that resumes
    after a crash; the fingerprint uses its qualified name."""
    from neurovar.record import _noise_identity

    a = _noise_identity(_user_noise_model(_noisy), seeded=True)
    assert a == {"relu2": {"callable": f"{__name__}._noisy"}}
    assert "0x" not in repr(a)


def test_module_seeds_do_not_matter_when_rng_is_given(tmp_path):
    """With rng given every noise module is reseeded from it: their own seeds cannot change
    the recording, so a model rebuilt with fresh seeds (as after a crash) resumes."""
    from neurovar.noise import IsotropicNoise

    images = make_images()
    kw = dict(layers=["fc2"], n_trials=2, batch_size=4, rng=0, progress=False)
    path = tmp_path / "rec.zarr"
    _interrupt(_user_noise_model(IsotropicNoise(0.3, rng=11)), images, path, 1, **kw)
    ref = record_activations(_user_noise_model(IsotropicNoise(0.3, rng=12)), images, **kw)
    got = record_activations(
        _user_noise_model(IsotropicNoise(0.3, rng=13)), images, store=path, resume=True, **kw
    )
    assert np.array_equal(got["fc2"]["activation"].values, ref["fc2"]["activation"].values)
    # without rng the module's own seed is what the noise draws from: a different one is refused
    path2 = tmp_path / "own.zarr"
    kw_own = {**kw, "rng": None}
    _interrupt(_user_noise_model(IsotropicNoise(0.3, rng=11)), images, path2, 1, **kw_own)
    with pytest.raises(InvalidParameterError, match="noise configuration"):
        record_activations(
            _user_noise_model(IsotropicNoise(0.3, rng=12)),
            images,
            store=path2,
            resume=True,
            **kw_own,
        )


def test_noise_submodule_in_the_same_process_resumes_exactly(tmp_path):
    """A noise module used as an ordinary submodule (not injected) gets its running
    estimates back after an interrupted call too, so the same model object resumes."""
    from neurovar.noise import IsotropicNoise

    torch.manual_seed(0)
    images = make_images()

    def build():
        gen = torch.Generator().manual_seed(3)
        first, last = torch.nn.Linear(64, 8), torch.nn.Linear(8, 3)
        with torch.no_grad():
            for p in (*first.parameters(), *last.parameters()):
                p.copy_(torch.randn(p.shape, generator=gen))
        noise = IsotropicNoise(1.0, relative_scale=0.5, rng=5)
        model = torch.nn.Sequential(torch.nn.Flatten(), first, noise, last).train()
        model(torch.rand(16, 1, 8, 8, generator=gen))  # a running estimate first
        return model

    kw = dict(layers=["3"], n_trials=2, batch_size=4, rng=0, progress=False)
    model = build()
    before = [b.clone() for b in model[2].buffers()]
    path = tmp_path / "rec.zarr"
    # two probe passes (the check for randomness neurovar does not track), then 2 chunks
    hook = model[3].register_forward_hook(RaiseAfter(4))
    with pytest.raises(RuntimeError, match="boom"):
        record_activations(model, images, store=path, **kw)
    hook.remove()
    assert int(_root(path)["neurovar_chunks_written"]) == 2  # interrupted mid-way
    assert all(torch.equal(a, b) for a, b in zip(before, model[2].buffers()))
    got = record_activations(model, images, store=path, resume=True, **kw)
    ref = record_activations(build(), images, **kw)
    assert np.array_equal(got["3"]["activation"].values, ref["3"]["activation"].values)


def test_constant_noise_buffers_are_not_saved_every_chunk(tmp_path):
    """A covariance factor does not change during a recording: the per-chunk snapshot holds
    only what does (running estimates), so it stays small."""
    from neurovar.models import SmallCNN
    from neurovar.noise import CovarianceNoise, inject_noise

    images = make_images()
    n = 64
    cov = torch.eye(n, dtype=torch.float64) + 0.5
    model = SmallCNN(channels=(2, 2), hidden=n, n_classes=3).eval()
    inject_noise(model, {"relu3": CovarianceNoise(cov, rng=1)})
    path = tmp_path / "rec.zarr"
    kw = dict(layers=["fc2"], n_trials=2, batch_size=4, rng=0, progress=False)
    _interrupt(model, images, path, 1, **kw)
    state = str(_root(path)["neurovar_resume_state"])
    factor_bytes = n * n * 8
    assert len(state) < factor_bytes  # the 64 x 64 float64 factor (32 KiB) is not in it
    ref = record_activations(model, images, **kw)
    got = record_activations(model, images, store=path, resume=True, **kw)
    assert np.array_equal(got["fc2"]["activation"].values, ref["fc2"]["activation"].values)
