from pathlib import Path

import pytest
import torch

from cpbook import cache

REPO = Path(__file__).resolve().parents[1]


def names(folder: Path) -> list[str]:
    """What a cache folder holds, the entries' lock files (which stay) aside."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_hash_ignores_key_order_and_sees_every_value():
    assert cache.config_hash({"a": 1, "b": 2}) == cache.config_hash({"b": 2, "a": 1})
    assert cache.config_hash({"a": 1, "b": 2}) != cache.config_hash({"a": 1, "b": 3})


def test_the_key_holds_the_kind_the_config_and_the_cache_version(monkeypatch):
    key = cache.entry_key("pretrain", {"d": 5})
    assert key != cache.entry_key("finetune", {"d": 5})
    assert key != cache.entry_key("pretrain", {"d": 6})
    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
    assert cache.entry_key("pretrain", {"d": 5}) != key      # a version bump makes every entry stale


def test_build_fills_the_entry_once_and_records_config_and_provenance(tmp_path):
    calls = []

    def make(folder):
        calls.append(folder)
        (folder / "weights.txt").write_text("w")
        return {"note": "made"}

    a = cache.build("thing", {"n": 1}, make, root=tmp_path)
    b = cache.build("thing", {"n": 1}, make, root=tmp_path)
    assert a == b and len(calls) == 1 and calls[0] != a
    assert (a / "weights.txt").read_text() == "w"
    entry = cache.read_entry(a)
    assert entry["config"] == {"n": 1} and entry["note"] == "made"
    assert entry["cache_version"] == cache.CACHE_VERSION
    assert cache.lookup("thing", {"n": 1}, root=tmp_path) == a
    assert cache.lookup("thing", {"n": 2}, root=tmp_path) is None


def test_a_failed_build_leaves_nothing_under_the_key_and_keeps_the_work_folder(tmp_path):
    work = cache.work_path("thing", {"n": 1}, root=tmp_path)
    (work / "checkpoint").write_text("step 7")

    def broken(folder):
        (folder / "half").write_text("half an artifact")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.build("thing", {"n": 1}, broken, root=tmp_path)
    assert cache.lookup("thing", {"n": 1}, root=tmp_path) is None
    assert names(tmp_path / "thing") == [work.name]           # no temporary left
    assert (work / "checkpoint").read_text() == "step 7"       # resumable

    cache.build("thing", {"n": 1}, lambda folder: None, root=tmp_path)
    assert not work.exists()                    # the work folder goes once the entry is complete


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "t.safetensors"
    cache.save_tensors(path, {"w": torch.ones(3)})

    class Boom(Exception):
        pass

    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise Boom

    with pytest.raises(Boom):
        cache.atomic_write(path, broken)
    assert torch.equal(cache.load_tensors(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]    # no temporary left behind


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path))
    assert cache.cache_root() == tmp_path


def test_sha256_of_a_known_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert cache.sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --- checksums: a corrupt file is found, named, and made again ---------------------------------

def _flip_a_byte(path, at=-1):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _entry_with_weights(tmp_path, calls):
    def make(folder):
        calls.append(folder)
        cache.save_tensors(folder / "weights.safetensors", {"w": torch.arange(1000.0)})
    return cache.build("thing", {"n": 1}, make, root=tmp_path)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_corrupt_entry_is_reported_by_name_and_built_again(tmp_path, damage):
    calls = []
    path = _entry_with_weights(tmp_path, calls)
    assert set(cache.read_entry(path)[cache.CHECKSUMS]) == {"weights.safetensors"}
    weights = path / "weights.safetensors"
    if damage == "flip":
        _flip_a_byte(weights, at=len(weights.read_bytes()) // 2)    # a bit flip inside a tensor
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    else:
        weights.unlink()
    with pytest.warns(cache.CorruptCacheWarning, match="weights.safetensors"):
        assert cache.lookup("thing", {"n": 1}, root=tmp_path) is None
    assert not path.exists()
    again = _entry_with_weights(tmp_path, calls)
    assert again == path and len(calls) == 2
    assert torch.equal(cache.load_tensors(again / "weights.safetensors")["w"], torch.arange(1000.0))
    assert names(tmp_path / "thing") == [path.name]   # nothing set aside is left


def test_a_sound_entry_is_used_as_it_is(tmp_path, recwarn):
    calls = []
    path = _entry_with_weights(tmp_path, calls)
    for _ in range(2):
        assert _entry_with_weights(tmp_path, calls) == path
    assert len(calls) == 1 and not recwarn.list


def test_an_entry_made_before_checksums_gets_them_on_first_use(tmp_path, recwarn):
    path = _entry_with_weights(tmp_path, [])
    entry = cache.read_entry(path)
    recorded = entry.pop(cache.CHECKSUMS)
    cache.write_json(path / cache.ENTRY_FILE, entry)
    cache._checked.clear()
    assert cache.lookup("thing", {"n": 1}, root=tmp_path) == path and not recwarn.list
    assert cache.read_entry(path)[cache.CHECKSUMS] == recorded


@pytest.mark.parametrize("damage", ["flip", "truncate", "no checksum"])
def test_a_corrupt_work_file_is_reported_and_removed(tmp_path, damage):
    path = tmp_path / "part.csv"
    cache.write_text(path, "a,b\n1,2\n3,4\n", checked=True)
    assert cache.intact(path)
    if damage == "flip":
        _flip_a_byte(path, at=5)
    elif damage == "truncate":
        path.write_text("a,b\n1,2\n")
    else:
        Path(f"{path}{cache.SIDECAR}").unlink()
    with pytest.warns(cache.CorruptCacheWarning, match="part.csv"):
        assert not cache.intact(path)
    assert list(tmp_path.iterdir()) == []
    assert not cache.intact(path)            # a missing file is simply not there, no warning


def test_two_processes_building_one_entry_leave_one_valid_entry(tmp_path):
    """Real processes, started together, both find the entry missing and build it."""
    script = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from cpbook import cache
def make(folder):
    time.sleep(1.0)                      # both are inside make at once
    (folder / "who").write_text(sys.argv[1] * 100000)
print(cache.build("thing", {{"n": 1}}, make, root=Path({str(tmp_path)!r})))
"""
    import subprocess
    import sys
    procs = [subprocess.Popen([sys.executable, "-c", script, who], stdout=subprocess.PIPE, text=True)
             for who in "ab"]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    assert names(tmp_path / "thing") == [Path(outs[0]).name]             # one entry, no temporaries
    assert cache.entry_problem(Path(outs[0])) is None
    assert (Path(outs[0]) / "who").read_text() in ("a" * 100000, "b" * 100000)
