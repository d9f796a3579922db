"""A build killed with SIGKILL resumes without re-encoding (a real process, killed for real).

It starts a fresh Python (torch + transformers imports), so it lives apart from the quick
in-process tests of test_index_builder.py; the accelerate build is in test_index_builder_accelerate.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import onegen.encode as encode_mod
from index_builder.__main__ import main
from index_builder.build import BuildFolder, build_dir_for
from onegen.encode import build_index
from onegen.index import IndexLoadError, VectorIndex
from test_index_builder import ROOT, WORLD, assert_same_index, models, world_docs  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
from tiny import load_tiny


# The killed build runs the real CLI with each encoder call slowed down, so that the kill lands
# mid-build however fast the machine is, without a test hook in the builder itself.
SLOW_BUILD = """
import sys, time
import onegen.encode as e
real = e.encode_documents
def slow(*a, **kw):
    time.sleep(0.5)
    return real(*a, **kw)
e.encode_documents = slow
from index_builder.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


# -- resume after SIGKILL ----------------------------------------------------------------------------

def test_killed_build_resumes_without_reencoding(models, tmp_path, monkeypatch):
    task, n, shard = "multi-hop", 30, 2
    out = tmp_path / "idx"
    args = ["world", str(WORLD), "--task", task, "--model", str(models[task]), "--out", str(out),
            "--limit", str(n), "--shard-size", str(shard), "--batch-size", "2", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, *args, "--threads", "1"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    folder = BuildFolder(build_dir_for(out))
    deadline = time.monotonic() + 600  # a loaded machine takes long to import torch
    try:
        while not folder.encoded(0):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the build never wrote its first shard"
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()

    done = [i for i in range(n // shard) if folder.encoded(i)]
    assert 1 <= len(done) < n // shard, "the build finished before it could be killed"
    assert not out.exists()
    with pytest.raises(IndexLoadError):
        VectorIndex.load(out)
    with pytest.raises(IndexLoadError):
        VectorIndex.load(folder.path)  # the build folder is not an index either
    mtimes = {i: folder.shard_vectors(i).stat().st_mtime_ns for i in done}

    encoded: list[str] = []
    real = encode_mod.encode_documents

    def counting(lm, task, docs, **kw):
        encoded.extend(d.id for d in docs)
        return real(lm, task, docs, **kw)

    monkeypatch.setattr(encode_mod, "encode_documents", counting)
    assert main([*args, "--keep-build"]) == 0
    assert len(encoded) == n - shard * len(done)  # only the shards the killed run had not finished
    assert {i: folder.shard_vectors(i).stat().st_mtime_ns for i in done} == mtimes
    lm = load_tiny(task, models[task].parent)
    assert_same_index(VectorIndex.load(out), build_index(lm, task, world_docs(task, n), batch_size=2))
