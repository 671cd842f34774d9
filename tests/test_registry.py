import json

import pytest
import yaml

from ddrm_helpers import ConfigError
from ddrm_helpers.paths import MANIFESTS_DIR
from ddrm_helpers.registry import load_manifest, load_registry

from .conftest import SHARED

# Facts from the published checkpoint notes (shared/checkpoints.md), typed in again so that an edit
# of the registry is caught.
FACTS = {
    "celeba_hq": ("celeba_hq.ckpt", "celeba", 454_777_119,
                  "6cbb630eb856ff3ebe4854fe87af3c21a052765678955999db97ea15b5eeb8a5"),
    "imagenet_256_uncond": ("256x256_diffusion_uncond.pt", "imagenet", 2_211_383_297,
                            "a37c32fffd316cd494cf3f35b339936debdc1576dad13fe57c42399a5dbc78b1"),
    "imagenet_256_cond": ("256x256_diffusion.pt", "imagenet", 2_215_479_544,
                          "37ea85387f44a6485697fbf31ccfea46acb5dddabcf869fddc007270a7e2e87e"),
}


@pytest.mark.parametrize("key", sorted(FACTS))
def test_pinned_files_match_the_published_facts(key):
    spec = load_registry()[key]
    assert (spec.file, spec.subdir, spec.size, spec.sha256) == FACTS[key]
    assert spec.pinned and spec.size_ok(spec.size) and not spec.size_ok(spec.size - 1)


def test_the_wrong_disco_diffusion_hash_is_nowhere():
    assert all(not (s.sha256 or "").startswith("983e3de6") for s in load_registry().values())


def test_classifier_is_unpinned_with_a_size_range_from_its_manifest():
    spec = load_registry()["imagenet_256_classifier"]
    assert not spec.pinned and spec.size is None
    params = json.loads(spec.manifest_path().read_text())["num_params"]
    assert spec.size_min == params * 4
    assert spec.size_max == params * 4 + 200_000
    assert spec.size_ok(216_440_000) and not spec.size_ok(1_024)


def test_urls_are_https_and_dead_s3_original_is_last():
    registry = load_registry()
    for spec in registry.values():
        assert len(spec.urls) >= 2, spec.key
        assert all(src.url.startswith("https://") for src in spec.urls)
    celeba = [s.url for s in registry["celeba_hq"].urls]
    assert "s3-us-west-2.amazonaws.com" in celeba[-1]
    assert any("diffusion_openai.pt" in s.url for s in registry["imagenet_256_uncond"].urls)


@pytest.mark.skipif(not (SHARED / "manifests").is_dir(),
                    reason=f"no {SHARED / 'manifests'} beside the checkout to compare configs/manifests with "
                           "(a clone has none; every other test reads configs/manifests)")
def test_shipped_manifests_equal_the_shared_ones():
    shared = SHARED / "manifests"
    names = sorted(p.name for p in shared.glob("*.json"))
    assert names == sorted(p.name for p in MANIFESTS_DIR.glob("*.json"))
    for name in names:
        assert json.loads((MANIFESTS_DIR / name).read_text()) == json.loads((shared / name).read_text())


def test_every_entry_has_a_manifest_of_the_stated_size():
    for spec in load_registry().values():
        manifest = load_manifest(spec)
        assert len(manifest) == json.loads(spec.manifest_path().read_text())["num_tensors"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"urls": ["http://example.com/x.pt"]}, "not an https URL"),
        ({"sha256": "abc"}, "64 hex digits"),
        ({"size": None}, "either 'size'"),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_bad_registry_entries_are_refused(tmp_path, change, message):
    entry = {"file": "x.pt", "subdir": "x", "size": 10, "sha256": "0" * 64,
             "urls": ["https://example.com/x.pt"]}
    entry.update(change)
    path = tmp_path / "registry.yml"
    path.write_text(yaml.safe_dump({"x": entry}))
    with pytest.raises(ConfigError, match=message):
        load_registry(path)


def test_plain_http_is_allowed_on_loopback_only(tmp_path):
    path = tmp_path / "registry.yml"
    entry = {"file": "x.pt", "subdir": "x", "size": 10, "sha256": None,
             "urls": ["http://127.0.0.1:8000/x.pt"]}
    path.write_text(yaml.safe_dump({"x": entry}))
    assert load_registry(path)["x"].urls[0].url.startswith("http://127.0.0.1")


def test_source_notes_are_read_whole():
    # An unquoted " #24" in YAML would start a comment and cut the note short.
    note = load_registry()["celeba_hq"].urls[0].note
    assert note.endswith("recommended in ddrm issue #24")
