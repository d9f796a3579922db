"""A two-process `accelerate launch` build (CPU, gloo) equals a one-process build.

It starts three fresh Pythons (the launcher and two workers), so it has a file of its own.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from index_builder.build import BuildFolder, build_dir_for
from onegen.index import VectorIndex
from test_index_builder import ROOT, WORLD, assert_same_index, build_cli, models  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_accelerate_launch_two_cpu_processes_equals_single(models, tmp_path):
    """`accelerate launch --multi_gpu` runs torchrun; on a CPU-only machine its processes use gloo.
    (`--cpu` would start one process: accelerate expects MPI for several CPU processes.)"""
    if shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists():
        pytest.skip("accelerate's launcher is not installed")
    task, model = "single-hop", models["single-hop"]
    common = ["--limit", "9", "--shard-size", "2", "--batch-size", "2", "--device", "cpu"]
    single, launched = tmp_path / "one", tmp_path / "two"
    launcher = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [str(launcher) if launcher.exists() else "accelerate", "launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
         "-m", "index_builder", "world", str(WORLD), "--task", task, "--model", str(model), "--out", str(launched),
         "--quiet", *common, "--keep-build"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert build_cli(["world", str(WORLD)], task, model, single, *common) == 0  # meanwhile, in this process
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output
    folder = BuildFolder(build_dir_for(launched))
    assert {folder.vectors_info(i)["rank"] for i in range(5)} == {0, 1}, output
    assert_same_index(VectorIndex.load(launched), VectorIndex.load(single))
