import pytest
import torch

from cpbook import cache


def test_hash_ignores_key_order_and_sees_every_value():
    assert cache.config_hash({"a": 1, "b": 2}) == cache.config_hash({"b": 2, "a": 1})
    assert cache.config_hash({"a": 1, "b": 2}) != cache.config_hash({"a": 1, "b": 3})


def test_run_dir_is_keyed_by_config_and_records_it(tmp_path):
    a = cache.run_dir("pretrain", {"d": 5}, root=tmp_path)
    assert a == cache.run_dir("pretrain", {"d": 5}, root=tmp_path)
    assert a != cache.run_dir("pretrain", {"d": 6}, root=tmp_path)
    assert cache.read_json(a / "config.json") == {"d": 5}


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
        cache._atomic(path, broken)
    assert torch.equal(cache.load_tensors(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]    # no temporary left behind


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CPBOOK_CACHE", str(tmp_path))
    assert cache.cache_root() == tmp_path
