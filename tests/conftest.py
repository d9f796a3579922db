"""Shared fixtures. pytest.ini puts the checkout and tests/ (helper modules: tiny, scripted) on the path."""
import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run several times faster on one thread (no spin-waiting
    on thread hand-offs). Modules opt in with pytestmark = pytest.mark.usefixtures("one_thread")."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny random checkpoint per protocol, loaded through the product's loader."""
    from tiny import load_tiny

    root = tmp_path_factory.mktemp("tiny")
    return {t: load_tiny(t, root) for t in ("multi-hop", "entity-linking", "single-hop")}
