import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


import pytest  # noqa: E402


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
