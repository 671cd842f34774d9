"""A file without a pinned hash is checked as a zip before anything loads it.

Nobody publishes the classifier's sha256, so whatever a mirror serves under its name is read.
``torch.save`` writes a zip of stored (never compressed) records, one per tensor's storage, plus
a pickle and a few small ones; each hostile file here is a real ``torch.save`` of a small state
dict, rewritten in one way, served by the local server or placed in the checkpoint folder. It
must be refused in one line naming the file and what is wrong, before any ``torch.load``.
"""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from ddrm_helpers import DownloadError
from ddrm_helpers.download import RetryPolicy, fetch_checkpoint
from ddrm_helpers.store import CheckpointStore

from .test_download import files_in, spec_for
from .tiny_files import TINY_TENSORS, rewritten_zip, state_dict_bytes, write_manifest

pytestmark = pytest.mark.server

STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
GOOD = state_dict_bytes()


def bomb(name, data):  # the first tensor's record compressed, inflating to 64 MB
    if name.endswith("/data/0"):
        return [(name, data + bytes(64 << 20), DEFLATED)]
    return [(name, data, STORED)]


def compressed_exactly(name, data):  # the right bytes, only compressed: mmap would read them as weights
    return [(name, data, DEFLATED if name.endswith("/data/1") else STORED)]


def grown(name, data):  # a stored record longer than its tensor
    return [(name, data + bytes(4096) if name.endswith("/data/2") else data, STORED)]


def padded_with_records(name, data):  # twelve records that torch.save never writes
    extra = [(f"{name}.extra{i}", b"x" * 100, STORED) for i in range(12)] if name.endswith("/version") else []
    return [(name, data, STORED), *extra]


def pickle_compressed(name, data):
    return [(name, data, DEFLATED if name.endswith("data.pkl") else STORED)]


def tensor_dropped(name, data):  # a record missing: fewer storages than tensors
    return [] if name.endswith("/data/2") else [(name, data, STORED)]


HOSTILE = {
    "a DEFLATE record inflating to 64 MB": (bomb, "archive/data/0 is compressed (DEFLATE)"),
    "a record compressed without change": (compressed_exactly, "archive/data/1 is compressed (DEFLATE)"),
    "a record longer than its tensor": (grown, "archive/data/2 holds 6,656 bytes, which is no tensor's size"),
    "twelve records of no tensor": (padded_with_records, "directory lists 21 records, more than the 11 it can need"),
    "a compressed pickle": (pickle_compressed, "archive/data.pkl is compressed (DEFLATE)"),
    "a tensor's record missing": (tensor_dropped, "2 data records for the 3 tensors of the manifest"),
}


@pytest.fixture
def loads(monkeypatch):
    """Every file torch.load is asked to read."""
    seen = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: seen.append(str(f)) or real(f, *a, **k))
    return seen


@pytest.fixture
def unpinned(tmp_path):
    manifest = write_manifest(tmp_path / "tiny.json")

    def make(payload, *urls):
        return spec_for(*urls, payload=payload, size=None, sha256=None, size_min=len(payload) - 100,
                        size_max=len(payload) + 100, manifest=str(manifest))

    return make


@pytest.fixture
def policy():
    return RetryPolicy(max_failures=1, read_timeout=2, connect_timeout=2, sleep=lambda s: None)


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_zip_served_as_the_unpinned_file_is_refused_before_any_load(server, tmp_path, unpinned, policy,
                                                                             loads, case):
    change, why = HOSTILE[case]
    hostile = rewritten_zip(GOOD, change)
    root = tmp_path / "checkpoints"
    with pytest.raises(DownloadError) as info:
        fetch_checkpoint(unpinned(hostile, server.add("/cls", hostile)), root, retry=policy, progress=False,
                         quiet=True)
    outcome = info.value.attempts[0][1]
    assert outcome.startswith("not the expected file: ")
    assert "model.ckpt.part cannot be loaded as a checkpoint" in outcome
    assert why in outcome and "\n" not in outcome
    assert loads == []  # refused from the zip's directory alone
    assert files_in(root / "test") <= {".model.ckpt.lock"}


@pytest.mark.parametrize("case", ["a DEFLATE record inflating to 64 MB", "a record longer than its tensor"])
def test_a_hostile_zip_placed_in_the_folder_is_corrupt_and_set_aside(server, tmp_path, unpinned, policy, loads, case):
    change, why = HOSTILE[case]
    hostile = rewritten_zip(GOOD, change)
    root = tmp_path / "checkpoints"
    (root / "test").mkdir(parents=True)
    (root / "test" / "model.ckpt").write_bytes(hostile)
    store = CheckpointStore(root)
    spec = unpinned(hostile, server.add("/cls", GOOD))
    state = store.verify(spec, quiet=True)
    assert state.state == "corrupt" and why in state.detail and loads == []
    spec = unpinned(GOOD, server.add("/cls", GOOD))
    path = store.fetch(spec, retry=policy, progress=False, quiet=True)
    assert path.read_bytes() == GOOD and (root / "test" / "model.ckpt.invalid").read_bytes() == hostile


def test_the_real_torch_save_of_the_manifest_passes_and_loads_memory_mapped(server, tmp_path, unpinned, policy, loads):
    path = fetch_checkpoint(unpinned(GOOD, server.add("/cls", GOOD)), tmp_path / "c", retry=policy, progress=False,
                            quiet=True)
    assert path.read_bytes() == GOOD and len(loads) == 1


def test_an_unpinned_file_is_never_loaded_without_memory_mapping(server, tmp_path, unpinned, policy, monkeypatch):
    real = torch.load

    def no_mmap_here(f, *args, **kwargs):  # a mount where mapping fails, as on some FUSE file systems
        if kwargs.get("mmap"):
            raise RuntimeError("mmap failed")
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", no_mmap_here)
    with pytest.raises(DownloadError, match="could not be memory-mapped") as info:
        fetch_checkpoint(unpinned(GOOD, server.add("/cls", GOOD)), tmp_path / "c", retry=policy, progress=False,
                         quiet=True)
    assert "copy it to a local disk" in str(info.value)


def test_load_pretrained_checks_an_unpinned_classifier_before_loading_it(tmp_path, loads):
    from ddrm_helpers.errors import CheckpointMismatchError
    from ddrm_helpers.models import load_pretrained

    from . import tiny_models
    from .tiny_files import pinned_entry, write_registry

    config = tiny_models._TINY.config("imagenet_256_cc", tiny=True)
    model = tmp_path / "model.pt"
    model.write_bytes(tiny_models.tiny_checkpoint_bytes("imagenet_256_cond"))
    classifier = tiny_models.tiny_checkpoint_bytes("imagenet_256_classifier")
    names = torch.load(__import__("io").BytesIO(classifier), weights_only=True)
    manifest = tmp_path / "classifier.json"
    manifest.write_text(json.dumps({"tensors": {n: {"shape": list(t.shape), "dtype": "float32"}
                                                for n, t in names.items()}}))
    loads.clear()
    hostile = tmp_path / "classifier.pt"
    hostile.write_bytes(rewritten_zip(classifier, bomb))
    entries = {"imagenet_256_cond": pinned_entry("model.pt", "imagenet", model.read_bytes(), ["https://e.org/m"]),
               "imagenet_256_classifier": {"file": "classifier.pt", "subdir": "imagenet", "sha256": None,
                                           "size_min": 1, "size_max": 1 << 30, "manifest": str(manifest),
                                           "urls": ["https://e.org/c"]}}
    store = CheckpointStore(tmp_path / "c", write_registry(tmp_path / "r.yml", entries))
    with pytest.raises(CheckpointMismatchError, match=r"classifier.pt cannot be loaded as a checkpoint: .*compressed"):
        load_pretrained(config, device="cpu", store=store, paths={"model": model, "classifier": hostile})
    assert str(hostile) not in loads


def test_tiny_tensors_are_what_the_manifest_of_these_tests_says():
    assert set(torch.load(__import__("io").BytesIO(GOOD), weights_only=True)) == set(TINY_TENSORS)


@pytest.mark.parametrize("text", ["{not json", '{"tensors": {"w": {"shape": "3x4"}}}', '{"tensors": {"w": '
                                  '{"shape": [3], "dtype": "float9"}}}'])
def test_a_broken_manifest_is_one_line_naming_it_in_every_command(server, tmp_path, monkeypatch, capsys, text):
    from ddrm_helpers import cli

    from .tiny_files import pinned_entry, write_registry

    manifest = tmp_path / "classifier.json"
    manifest.write_text(text)
    entries = {"imagenet_256_cond": pinned_entry("model.pt", "imagenet", GOOD, [server.add("/m", GOOD)]),
               "imagenet_256_classifier": {"file": "classifier.pt", "subdir": "imagenet", "sha256": None,
                                           "size_min": 1, "size_max": 1 << 20, "manifest": str(manifest),
                                           "urls": [server.add("/c", GOOD)]}}
    monkeypatch.setenv("DDRM_REGISTRY", str(write_registry(tmp_path / "r.yml", entries)))
    root = str(tmp_path / "c")
    for command in (["status"], ["download", "--quiet"]):
        assert cli.main([*command, "--config", "imagenet_256_cc", "--dir", root]) == 1
        out, err = capsys.readouterr()
        [row] = [line for line in out.splitlines() if "imagenet_256_classifier" in line]
        assert " error " in row and f"the manifest {manifest} of checkpoint 'imagenet_256_classifier'" in row
        assert "Traceback" not in out + err
    assert server.requests_to("/c") == []


def test_even_a_pinned_file_is_never_loaded_when_a_record_could_inflate(tmp_path, loads):
    from ddrm_helpers.errors import CheckpointMismatchError
    from ddrm_helpers.verify import load_state_dict

    path = tmp_path / "swapped.pt"  # a verified file swapped for a bomb between its hash and its load
    path.write_bytes(rewritten_zip(GOOD, bomb))
    with pytest.raises(CheckpointMismatchError, match=r"swapped.pt cannot be loaded as a checkpoint: archive/data/0 is "
                                                      r"compressed \(DEFLATE\)"):
        load_state_dict(path)
    assert loads == []


def test_records_claiming_more_bytes_than_the_file_has_are_refused(tmp_path, loads):
    import struct

    from ddrm_helpers.errors import CheckpointMismatchError
    from ddrm_helpers.verify import load_state_dict

    data = bytearray(GOOD)
    entry = data.index(b"PK\x01\x02")  # the first entry of the central directory
    struct.pack_into("<II", data, entry + 20, 1 << 30, 1 << 30)  # its stored and unpacked sizes: 1 GiB
    path = tmp_path / "lying.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointMismatchError, match=r"its records claim 1,07\d,\d{3},\d{3} bytes, more than the "
                                                      rf"file's {len(GOOD):,}"):
        load_state_dict(path)
    assert loads == []
