"""Hub references, push and pull, against a local stand-in for the Hugging Face hub (no network)."""
from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, errors

from index_builder.__main__ import main
from index_builder.hub import pull, push
from onegen.documents import Document
from onegen.hub import HubRef, IndexFetchError, parse_hub_ref, resolve_index_path
from onegen.index import IndexManifest, VectorIndex


def small_index(path: Path, n: int = 6) -> Path:
    g = torch.Generator().manual_seed(0)
    docs = [Document(f"d{i}", f"Title {i}", f"Text {i}.") for i in range(n)]
    VectorIndex(torch.randn(n, 8, generator=g), docs,
                manifest=IndexManifest("entity-linking", "tiny", "a" * 32, 8, 0, 0)).save(path)
    return path


class FakeHub:
    """Dataset repos as local folders; records the calls huggingface_hub would make."""

    def __init__(self, root: Path):
        self.root = root
        self.calls: list[tuple[str, dict]] = []

    def repo(self, repo_id: str, revision: str | None = None) -> Path:
        return self.root / repo_id / (revision or "main")

    def snapshot_download(self, repo_id, *, repo_type=None, revision=None, allow_patterns=None, local_dir=None,
                          cache_dir=None, **kw):
        self.calls.append(("snapshot_download", dict(repo_id=repo_id, repo_type=repo_type, revision=revision,
                                                     allow_patterns=allow_patterns, local_dir=local_dir)))
        src = self.repo(repo_id, revision)
        if not src.exists():
            url = f"https://huggingface.co/api/datasets/{repo_id}"
            raise errors.RepositoryNotFoundError(f"404 {repo_id}", response=httpx.Response(
                404, request=httpx.Request("GET", url)))
        dest = Path(local_dir) if local_dir else self.root / "_cache" / repo_id.replace("/", "--") / (revision or "main")
        dest.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if allow_patterns is None or f.name in allow_patterns:
                shutil.copy(f, dest / f.name)
        (dest / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)  # what local_dir downloads leave
        return str(dest)

    def create_repo(self, api, repo_id, **kw):
        self.calls.append(("create_repo", dict(repo_id=repo_id, **kw)))

    def create_branch(self, api, repo_id, **kw):
        self.calls.append(("create_branch", dict(repo_id=repo_id, **kw)))

    def upload_folder(self, api, *, repo_id, folder_path, repo_type=None, revision=None, allow_patterns=None,
                      delete_patterns=None, commit_message=None, **kw):
        self.calls.append(("upload_folder", dict(repo_id=repo_id, folder_path=folder_path, repo_type=repo_type,
                                                 revision=revision, allow_patterns=allow_patterns,
                                                 delete_patterns=delete_patterns, commit_message=commit_message)))
        dest = self.repo(repo_id, revision)
        dest.mkdir(parents=True, exist_ok=True)
        for pattern in delete_patterns or []:
            (dest / pattern).unlink(missing_ok=True)
        for f in Path(folder_path).iterdir():
            if f.name in allow_patterns:
                shutil.copy(f, dest / f.name)
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/1",
                                          commit_message=commit_message, commit_description="", oid="1" * 40)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: fake.create_repo(api, repo_id, **kw))
    monkeypatch.setattr(HfApi, "create_branch", lambda api, repo_id, **kw: fake.create_branch(api, repo_id, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kw: fake.upload_folder(api, **kw))
    return fake


# -- references ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ref, want", [
    ("hf://owner/name", HubRef("owner/name")),
    ("hf://owner/my.index-v2@v1.0", HubRef("owner/my.index-v2", "v1.0")),
    ("hf://datasets/owner/name@main", HubRef("owner/name", "main")),
])
def test_parse_hub_ref(ref, want):
    assert parse_hub_ref(ref) == want and str(want).startswith("hf://")


@pytest.mark.parametrize("ref", ["hf://name-only", "hf://owner/name@", "hf://a/b/c", "owner/name"])
def test_parse_hub_ref_rejects(ref):
    with pytest.raises(ValueError):
        parse_hub_ref(ref)


def test_local_paths_pass_through(tmp_path):
    assert resolve_index_path(str(tmp_path / "idx")) == tmp_path / "idx"
    assert resolve_index_path("~/idx") == Path.home() / "idx"


def test_resolve_downloads_a_dataset_repo(hub, tmp_path):
    small_index(hub.repo("owner/ents", "v2"))
    path = resolve_index_path("hf://owner/ents@v2")
    assert VectorIndex.load(path).documents.ids() == [f"d{i}" for i in range(6)]
    name, call = hub.calls[-1]
    assert name == "snapshot_download"
    assert (call["repo_id"], call["repo_type"], call["revision"]) == ("owner/ents", "dataset", "v2")
    assert "manifest.json" in call["allow_patterns"] and "ann.faiss" in call["allow_patterns"]


def test_resolve_refuses_a_repo_that_is_not_an_index(hub):
    hub.repo("owner/notes").mkdir(parents=True)
    (hub.repo("owner/notes") / "README.md").write_text("hi")
    with pytest.raises(IndexFetchError, match="not an index"):
        resolve_index_path("hf://owner/notes")
    with pytest.raises(IndexFetchError, match="no such dataset repo"):
        resolve_index_path("hf://owner/missing")


def test_offline_without_a_cached_copy_says_what_to_do(monkeypatch):
    def offline(*a, **kw):
        raise errors.LocalEntryNotFoundError("Got: ConnectError: Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(IndexFetchError, match=r"unreachable.*pull owner/name@v1 --out DIR"):
        resolve_index_path("hf://owner/name@v1")


def test_real_client_offline_gives_a_clear_error(tmp_path, monkeypatch):
    """The real huggingface_hub call, offline mode forced and an empty cache: no network is touched."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(IndexFetchError, match="hf://owner/never-published"):
        resolve_index_path("hf://owner/never-published", cache_dir=tmp_path / "cache")


# -- push / pull -----------------------------------------------------------------------------------

def test_push_uploads_the_index_files_to_a_dataset_repo(hub, tmp_path):
    folder = small_index(tmp_path / "idx")
    (folder / "notes.txt").write_text("not part of the index")
    url = push(folder, "owner/ents", private=True, revision="v1")
    assert url.endswith("/commit/1")
    calls = dict(hub.calls)
    assert calls["create_repo"] == {"repo_id": "owner/ents", "repo_type": "dataset", "private": True, "exist_ok": True}
    assert calls["create_branch"]["branch"] == "v1"
    up = calls["upload_folder"]
    assert up["repo_type"] == "dataset" and up["folder_path"] == str(folder) and up["revision"] == "v1"
    assert sorted(up["allow_patterns"]) == ["documents.arrow", "manifest.json", "vectors.safetensors"]
    # A flat, uncalibrated index replaces an approximate or calibrated one cleanly.
    assert up["delete_patterns"] == ["ann.faiss", "calibration.json"]
    assert "6 entity-linking documents" in up["commit_message"]
    assert sorted(p.name for p in hub.repo("owner/ents", "v1").iterdir()) == sorted(up["allow_patterns"])
    (folder / "calibration.json").write_text("{}")  # added after the build, outside the manifest
    push(folder, "owner/ents", revision="v1")
    assert "calibration.json" in dict(hub.calls)["upload_folder"]["allow_patterns"]


def test_push_refuses_folders_that_are_not_whole_indexes(hub, tmp_path):
    from onegen.index import IndexLoadError

    with pytest.raises(IndexLoadError, match="not an index folder"):
        push(tmp_path, "owner/x")
    folder = small_index(tmp_path / "idx")
    (folder / "documents.arrow").unlink()
    with pytest.raises(IndexLoadError, match="documents.arrow is missing"):
        push(folder, "owner/x")
    assert not [c for c in hub.calls if c[0] == "upload_folder"]


def test_pull_round_trip_through_the_cli(hub, tmp_path, capsys):
    folder = small_index(tmp_path / "idx")
    assert main(["push", str(folder), "owner/ents"]) == 0
    out = tmp_path / "pulled"
    assert main(["pull", "owner/ents", "--out", str(out)]) == 0
    assert "6 documents" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["documents.arrow", "manifest.json", "vectors.safetensors"]
    a, b = VectorIndex.load(folder), VectorIndex.load(out)
    assert a.documents.ids() == b.documents.ids() and torch.equal(a.vectors, b.vectors)
    assert not list(tmp_path.glob(".pulled.*"))


def test_pull_of_a_damaged_repo_leaves_nothing(hub, tmp_path):
    repo = small_index(hub.repo("owner/bad"))
    data = bytearray((repo / "vectors.safetensors").read_bytes())
    data[-1] ^= 0xFF  # same size, wrong checksum
    (repo / "vectors.safetensors").write_bytes(bytes(data))
    with pytest.raises(IndexFetchError, match="damaged.*checksum"):
        pull("owner/bad", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_pull_refuses_to_replace_a_folder_that_is_not_an_index(hub, tmp_path):
    from index_builder.build import BuildError

    small_index(hub.repo("owner/ents"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("...")
    with pytest.raises(BuildError, match="not an index folder"):
        pull("owner/ents", tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_cli_offline_error_is_one_line(monkeypatch, tmp_path, capsys):
    def offline(*a, **kw):
        raise errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    assert main(["pull", "hf://owner/ents", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot download hf://owner/ents: the Hugging Face hub is unreachable")
