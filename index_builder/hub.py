"""Publishing indexes as Hugging Face dataset repos (`push`) and fetching them (`pull`).

A repo holds exactly the files of an index folder (manifest.json, vectors.safetensors,
documents.arrow, ann.faiss for approximate kinds, and calibration.json when the folder has been
calibrated: `python -m onegen calibrate`). `pull` downloads into a temporary folder,
checks every file against the manifest's sizes and checksums, then renames it into place, so a
broken download never becomes an index folder. Apps take `hf://owner/name` directly
(`onegen.hub.resolve_index_path`).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from onegen.hub import INDEX_FILES, HubRef, IndexFetchError, download_index, parse_hub_ref
from onegen.calibration import CALIBRATION
from onegen.index import ANN, MANIFEST, IndexLoadError, read_manifest

from onegen.fsutil import sha256_file, staged_dir

from .build import check_output_folder


def index_files(folder: Path, *, verify: bool = False) -> list[str]:
    """The files of an index folder, checked against its manifest (sizes; checksums with `verify`)."""
    manifest = read_manifest(folder)
    names = [MANIFEST]
    for name, want in manifest.files.items():
        f = folder / name
        if not f.is_file():
            raise IndexLoadError(f"index {folder} is incomplete: {name} is missing")
        if "size" in want and f.stat().st_size != want["size"]:
            raise IndexLoadError(f"index {folder} is corrupted: {name} has {f.stat().st_size} bytes, "
                                 f"the manifest says {want['size']}")
        if verify and "sha256" in want and sha256_file(f) != want["sha256"]:
            raise IndexLoadError(f"index {folder} is corrupted: {name} does not match its checksum")
        names.append(name)
    if manifest.kind != "flat" and ANN not in names:
        raise IndexLoadError(f"index {folder} is a {manifest.kind} index without {ANN}")
    if (folder / CALIBRATION).is_file():  # not in the manifest: it may be added after the build
        names.append(CALIBRATION)
    return names


def push(folder: str | os.PathLike, repo: str, *, private: bool = False, revision: str | None = None,
         message: str | None = None, token: str | None = None) -> str:
    """Upload an index folder to the dataset repo `owner/name` (created when missing); returns the
    commit URL. Files of an earlier approximate index that this one lacks are removed."""
    from huggingface_hub import HfApi, errors

    folder = Path(folder)
    names = index_files(folder)
    hub = parse_hub_ref(repo, require_prefix=False)
    if hub.revision:
        revision = revision or hub.revision
    manifest = read_manifest(folder)
    api = HfApi(token=token)
    try:
        api.create_repo(hub.repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision:
            api.create_branch(hub.repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        info = api.upload_folder(
            repo_id=hub.repo_id, folder_path=str(folder), repo_type="dataset", revision=revision,
            allow_patterns=names, delete_patterns=[n for n in INDEX_FILES if n not in names],
            commit_message=message or (f"{manifest.kind} index: {manifest.documents} {manifest.protocol} documents, "
                                       f"model {manifest.model}"))
    except errors.HfHubHTTPError as e:
        raise IndexFetchError(f"could not push to {hub.repo_id}: {e}") from e
    except OSError as e:  # no network: connection errors surface as OSError subclasses
        raise IndexFetchError(f"could not push to {hub.repo_id}: the Hugging Face hub is unreachable ({e})") from e
    return str(getattr(info, "commit_url", "") or f"https://huggingface.co/datasets/{hub.repo_id}")


def pull(repo: str, out: str | os.PathLike, *, revision: str | None = None) -> Path:
    """Download the index in dataset repo `owner/name[@revision]` (or `hf://...`) into `out`."""
    hub = parse_hub_ref(repo, require_prefix=False)
    if revision:
        hub = HubRef(hub.repo_id, revision)
    out = Path(out)
    check_output_folder(out)
    with staged_dir(out) as tmp:
        download_index(hub, local_dir=tmp)
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
        try:
            index_files(tmp, verify=True)
        except IndexLoadError as e:
            raise IndexFetchError(f"{hub}: the downloaded index is damaged: {e}") from e
    return out
