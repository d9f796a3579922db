"""Index references on the Hugging Face hub: `hf://owner/name[@revision]` -> a local folder.

An index published with `python -m index_builder push` is a dataset repo holding the index folder's
files. Wherever an index folder is accepted, `hf://owner/name` (optionally `@branch`, `@tag` or
`@commit`; `hf://datasets/owner/name` is the same) names one: `resolve_index_path` downloads it
into the hub cache once (huggingface_hub.snapshot_download) and returns the snapshot folder. Offline,
a copy downloaded earlier is used; without one the error says how to get the index another way.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .calibration import CALIBRATION
from .errors import OneGenError

HF_PREFIX = "hf://"
INDEX_FILES = ("manifest.json", "vectors.safetensors", "documents.arrow", "ann.faiss", CALIBRATION)
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class IndexFetchError(OneGenError, RuntimeError):
    """An index on the hub that cannot be had: offline, missing, private, or not an index."""


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return HF_PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


def is_hub_ref(ref: str | os.PathLike) -> bool:
    return str(ref).startswith(HF_PREFIX)


def parse_hub_ref(ref: str, *, require_prefix: bool = True) -> HubRef:
    """`hf://owner/name[@revision]` (or, with require_prefix=False, `owner/name[@revision]`)."""
    text = str(ref).strip()
    if text.startswith(HF_PREFIX):
        text = text[len(HF_PREFIX):]
    elif require_prefix:
        raise ValueError(f"{ref!r} is not a hub reference (hf://owner/name[@revision])")
    if text.startswith("datasets/"):
        text = text[len("datasets/"):]
    repo, _, revision = text.partition("@")
    repo = repo.strip("/")
    if not _REPO.match(repo) or (_ and not revision):
        raise ValueError(f"bad hub reference {ref!r}: expected hf://owner/name or hf://owner/name@revision")
    return HubRef(repo, revision or None)


def resolve_index_path(ref: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local folder for an index reference: a path as given, or an `hf://` dataset downloaded
    into the hub cache (reused on later calls and offline)."""
    if not is_hub_ref(ref):
        return Path(ref).expanduser()
    return download_index(parse_hub_ref(ref), cache_dir=cache_dir)


def download_index(hub: HubRef, *, local_dir: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None) -> Path:
    """Download the index files of `hub` (into `local_dir`, or the hub cache) and return the folder."""
    import huggingface_hub
    from huggingface_hub import errors

    try:
        folder = huggingface_hub.snapshot_download(
            repo_id=hub.repo_id, repo_type="dataset", revision=hub.revision, allow_patterns=list(INDEX_FILES),
            local_dir=str(local_dir) if local_dir is not None else None,
            cache_dir=str(cache_dir) if cache_dir is not None else None)
    except errors.LocalEntryNotFoundError as e:
        raise IndexFetchError(
            f"cannot download {hub}: the Hugging Face hub is unreachable (offline?) and no copy was downloaded "
            f"before. On a machine with network run `python -m index_builder pull {hub.repo_id}"
            f"{'@' + hub.revision if hub.revision else ''} --out DIR`, copy DIR here and pass the folder "
            f"instead ({type(e).__name__})") from e
    except errors.RevisionNotFoundError as e:
        raise IndexFetchError(f"{hub}: the dataset repo has no revision {hub.revision!r}") from e
    except errors.RepositoryNotFoundError as e:
        raise IndexFetchError(f"{hub}: no such dataset repo on the hub (or it is private or gated: log in with "
                              f"`hf auth login` or set HF_TOKEN)") from e
    except errors.HfHubHTTPError as e:
        raise IndexFetchError(f"cannot download {hub}: {e}") from e
    path = Path(folder)
    if not (path / "manifest.json").exists():
        raise IndexFetchError(f"{hub} is not an index: the repo has no manifest.json "
                              "(publish indexes with `python -m index_builder push DIR owner/name`)")
    return path
