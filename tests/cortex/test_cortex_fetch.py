import hashlib
import shutil

import pytest

from neurovar.cortex import cache as fetch_mod
from neurovar.cortex.cache import REGISTRY, data_home_path, fetch, sha256sum

NAME = "semedo2019_v1v2/sample_data.mat"


def _serve_from(cortex_dir, calls):
    """Replacement downloader: serves the good bytes of the local cache for the URL."""
    by_url = {remote.url: cortex_dir / name for name, remote in REGISTRY.items()}

    def download(url, dest):
        calls.append(url)
        shutil.copyfile(by_url[url], dest)

    return download


def test_registry_matches_local_cache(cortex_dir):
    for name, remote in REGISTRY.items():
        assert sha256sum(cortex_dir / name) == remote.sha256, name
        assert remote.commit in remote.url and remote.url.startswith(
            "https://raw.githubusercontent.com/"
        )


def test_valid_shared_cache_is_used_without_download_or_write(cortex_dir, monkeypatch):
    def no_download(url, dest):
        raise AssertionError("a valid file must not be downloaded again")

    monkeypatch.setattr(fetch_mod, "_download", no_download)
    # the shared cache is read-only: fetch must return the path without writing anything
    before = sorted(p.name for p in (cortex_dir / "semedo2019_v1v2").iterdir())
    path = fetch(NAME, data_home=cortex_dir)
    assert path == cortex_dir / NAME
    assert sorted(p.name for p in path.parent.iterdir()) == before


def test_tampered_file_is_rejected_and_replaced(cortex_dir, tmp_path, monkeypatch):
    target = tmp_path / NAME
    target.parent.mkdir(parents=True)
    good = (cortex_dir / NAME).read_bytes()
    target.write_bytes(good[:-10] + b"0123456789")  # same size, different content
    calls = []
    monkeypatch.setattr(fetch_mod, "_download", _serve_from(cortex_dir, calls))
    with pytest.warns(UserWarning, match="sha256"):
        path = fetch(NAME, data_home=tmp_path)
    assert calls == [REGISTRY[NAME].url]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == REGISTRY[NAME].sha256
    assert [p.name for p in target.parent.iterdir()] == ["sample_data.mat"]  # no temp left
    # now valid: never fetched again
    fetch(NAME, data_home=tmp_path)
    assert len(calls) == 1


def test_missing_file_downloaded_and_partial_download_discarded(cortex_dir, tmp_path, monkeypatch):
    def truncated(url, dest):
        dest.write_bytes(b"partial")

    monkeypatch.setattr(fetch_mod, "_download", truncated)
    with pytest.raises(OSError, match="discarded"):
        fetch(NAME, data_home=tmp_path)
    assert not (tmp_path / NAME).exists()
    assert not (tmp_path / "semedo2019_v1v2").exists()  # issue 14: no empty folder left

    calls = []
    monkeypatch.setattr(fetch_mod, "_download", _serve_from(cortex_dir, calls))
    assert sha256sum(fetch(NAME, data_home=tmp_path)) == REGISTRY[NAME].sha256
    assert len(calls) == 1


def test_network_failure_gives_clear_error(tmp_path, monkeypatch):
    def offline(url, dest):
        raise OSError("no route to host")

    monkeypatch.setattr(fetch_mod, "_download", offline)
    with pytest.raises(OSError, match="Without network access"):
        fetch(NAME, data_home=tmp_path)


def test_corrupt_file_in_read_only_home_is_an_error(tmp_path, monkeypatch):
    target = tmp_path / NAME
    target.parent.mkdir(parents=True)
    target.write_bytes(b"corrupt")

    def read_only(*args, **kwargs):  # what a read-only folder does (also when run as root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fetch_mod.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(fetch_mod, "_download", lambda url, dest: None)
    with pytest.warns(UserWarning, match="sha256"), pytest.raises(OSError, match="writable"):
        fetch(NAME, data_home=tmp_path)
    assert target.read_bytes() == b"corrupt"  # untouched, and never returned as valid


def test_unknown_name_and_data_home_resolution(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="'name' parameter"):
        fetch("nope.npy", data_home=tmp_path)
    monkeypatch.setenv("NEUROVAR_DATA", str(tmp_path / "env"))
    assert data_home_path() == tmp_path / "env"
    assert data_home_path(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("NEUROVAR_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_home_path() == tmp_path / "xdg" / "neurovar"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_home_path() == data_home_path().home() / ".cache" / "neurovar"


def test_one_lookup_finds_the_shared_copy_beside_the_repository(cortex_dir, tmp_path, monkeypatch):
    # From a copy of the repository, with an empty $NEUROVAR_DATA and an empty user cache,
    # the data are found in shared/data/cortex beside the checkout: no download is tried
    # (the autouse fixture turns any download into a failure) and nothing is written.
    from neurovar.cortex import data_home_candidates, find_data_home, load_cowley_v4

    monkeypatch.setenv("NEUROVAR_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    candidates = data_home_candidates()
    assert candidates[:2] == [tmp_path / "env", tmp_path / "xdg" / "neurovar"]
    assert candidates[2].resolve() == cortex_dir
    assert find_data_home(NAME).resolve() == cortex_dir
    assert find_data_home("cowley2023_v4").resolve() == cortex_dir
    assert fetch(NAME).resolve() == (cortex_dir / NAME).resolve()
    assert load_cowley_v4().sizes["unit"] == 50
    assert not (tmp_path / "env").exists() and not (tmp_path / "xdg").exists()
    # $NEUROVAR_DATA comes first once it holds the file; an explicit data_home is the only one
    (tmp_path / "env" / NAME).parent.mkdir(parents=True)
    (tmp_path / "env" / NAME).write_bytes(b"corrupt")
    assert find_data_home(NAME) == tmp_path / "env"  # exists there (sha256 is fetch's job)
    with pytest.warns(UserWarning, match="using the verified copy"):
        assert fetch(NAME).resolve() == (cortex_dir / NAME).resolve()
    assert data_home_candidates(tmp_path / "arg") == [tmp_path / "arg"]


def test_failed_fetch_leaves_no_empty_folders(tmp_path):
    home = tmp_path / "new" / "home"
    with pytest.raises(OSError, match="Downloading"):
        fetch(NAME, data_home=home)
    assert list(tmp_path.iterdir()) == []
