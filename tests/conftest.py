"""Shared fixtures. pytest.ini puts the checkout and tests/ (helper modules: tiny, scripted) on the path."""
import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run several times faster on one thread (no spin-waiting
    on thread hand-offs); faiss's OpenMP threads likewise. Modules opt in with
    pytestmark = pytest.mark.usefixtures("one_thread")."""
    import faiss
    import torch

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(before[0])
    faiss.omp_set_num_threads(before[1])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny random checkpoint per protocol, loaded through the product's loader."""
    from tiny import load_tiny

    root = tmp_path_factory.mktemp("tiny")
    return {t: load_tiny(t, root) for t in ("multi-hop", "entity-linking", "single-hop")}


@pytest.fixture(scope="session", autouse=True)
def layer_cache_in_tmp(tmp_path_factory):
    """The layer view keeps its re-encoded vectors in the user cache: tests keep theirs in a folder
    of their own, so no run reads another's (the tiny models' fingerprints repeat between runs)."""
    folder = tmp_path_factory.mktemp("layer-vectors")
    mp = pytest.MonkeyPatch()
    mp.setattr("onegen.lens.layer_cache_dir", lambda: folder)
    yield folder
    mp.undo()
