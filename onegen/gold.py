"""The gold file that goes with a result file (`python -m onegen export --format gold RESULT`).

The authors' HotpotQA and 2Wiki scorers pair result line i with gold item i and assert that the
gold question is inside the line's "input", so a result file is scored only against a gold file
cut to the same items in the same order. Each result line records where its example came from:
its key (the item's id, "#2" for a repeat) and its position in the dataset file under "onegen",
and the dataset file itself in the run record ("data", "aliases"). The gold items are read again
from that file, checked against the copy of the item the line holds, and laid out the way the
task's scorer reads them (`Task.gold_layout`).

    gold = gold_for("assets/results/heldout-multi-hop.jsonl")
    write_gold(gold, "heldout-multi-hop.gold.json")   # and its 2Wiki alias file when there is one
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .assets import resolve_recorded
from .datasets import GoldLayout, LoadedDataset, load_dataset
from .errors import OneGenError
from .fsutil import atomic_write
from .results import NOT_JSON, numbered_result_lines
from .tasks import TASK_NAMES, get_task


class GoldExportError(OneGenError, ValueError):
    """A result file whose gold cannot be written; the message says why and what to pass."""


@dataclass(frozen=True)
class Gold:
    """The gold of one result file: its task, the dataset it was read from, and the layout."""

    result: Path
    task: str
    data: Path
    layout: GoldLayout


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """The result lines of `path` in file order (the order the authors' scorers read them)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GoldExportError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    lines = []
    for number, line, problem in numbered_result_lines(text):
        if line is None:
            why = ("; a gold file pairs with every line, so repair or remove it first" if problem == NOT_JSON else "")
            raise GoldExportError(f"{path.name}: line {number} is {problem}{why}")
        lines.append(line)
    if not lines:
        raise GoldExportError(f"{path.name} holds no result lines")
    return lines


def gold_for(result: str | Path, *, data: str | Path | None = None, aliases: str | Path | None = None) -> Gold:
    """The gold items of every line of `result`, in its line order. `data` / `aliases` replace
    the dataset file and 2Wiki alias file its run record names (a file moved since, or one
    written before result files recorded their data)."""
    result = Path(result)
    lines = read_lines(result)
    run = lines[0]["onegen"].get("run") or {}
    task = run.get("task")
    if task not in TASK_NAMES:
        raise GoldExportError(f"{result.name}: its lines do not name a task (got {task!r})")
    for number, line in enumerate(lines, 1):
        other = (line["onegen"].get("run") or {}).get("task", task)
        if other != task:
            raise GoldExportError(f"{result.name}: line {number} is a {other} result in a {task} file")
    data_path = _recorded(result, run, "data", data, required=True)
    aliases_path = _recorded(result, run, "aliases", aliases, required=False)
    items = _Items(_load(result, task, data_path, aliases_path))
    examples = [items.match(result, number, line) for number, line in enumerate(lines, 1)]
    return Gold(result=result, task=task, data=data_path, layout=get_task(task).gold_layout(examples))


def write_gold(gold: Gold, out: str | Path) -> list[Path]:
    """Write the gold file (and the 2Wiki alias file beside it, `NAME.aliases.jsonl`); returns
    the paths written. JSON is written ASCII-escaped: the authors' scripts open it in the
    locale's encoding."""
    out = Path(out)
    layout = gold.layout
    if layout.jsonl:
        atomic_write(out, "".join(json.dumps(item) + "\n" for item in layout.items))
    else:
        atomic_write(out, json.dumps(layout.items, indent=1) + "\n")
    written = [out]
    if layout.aliases is not None:
        alias_file = aliases_path_for(out)
        atomic_write(alias_file, "".join(json.dumps(row) + "\n" for row in layout.aliases))
        written.append(alias_file)
    return written


def aliases_path_for(gold: str | Path) -> Path:
    gold = Path(gold)
    return gold.with_name(f"{gold.stem}.aliases.jsonl")


def default_out(result: str | Path, layout: GoldLayout) -> Path:
    """RESULT.jsonl -> RESULT.gold.json (.jsonl for the jsonl layouts), beside it."""
    result = Path(result)
    return result.with_name(f"{result.stem}.gold.{'jsonl' if layout.jsonl else 'json'}")


def _recorded(result: Path, run: dict[str, Any], field: str, given: str | Path | None, *,
              required: bool) -> Path | None:
    if given is not None:
        path = Path(given)
    elif run.get(field):
        path = resolve_recorded(str(run[field]))
    elif required:
        raise GoldExportError(f"{result.name}: its run record names no dataset file (written before result files "
                              "recorded one); pass the file it was run on with --data")
    else:
        return None
    if not path.is_file():
        how = "given" if given is not None else f"recorded in {result.name}'s run record"
        raise GoldExportError(f"the {'dataset' if field == 'data' else 'alias'} file {how}, {path}, is gone; "
                              f"pass the file the run read with --{field}")
    return path


def _load(result: Path, task: str, data: Path, aliases: Path | None) -> LoadedDataset:
    try:
        # Bad items are skipped as `evaluate --skip-bad` skipped them; positions stay the file's.
        return load_dataset(data, task, skip_bad=True, aliases_path=aliases)
    except (OSError, ValueError) as e:
        raise GoldExportError(f"cannot read the dataset of {result.name}: {e}") from None


# Fields a result line adds to its item's copy (onegen/datasets.py result lines, evaluation.py).
_RESULT_FIELDS = frozenset({"input", "output", "output_qid", "trace", "onegen", "error"})


class _Items:
    """A loaded dataset, looked up by a result line's recorded position or key."""

    def __init__(self, loaded: LoadedDataset):
        from .evaluation import example_keys

        self.loaded = loaded
        self.name = Path(loaded.path).name
        self.keys = example_keys(loaded.examples)
        self.by_key = {k: i for i, k in enumerate(self.keys)}
        self.by_position = {p: i for i, p in enumerate(loaded.positions)}

    def match(self, result: Path, number: int, line: dict[str, Any]) -> Any:
        """The example line `number` was run on: by its recorded position, else by its key; then
        checked field by field against the copy of the item the line holds."""
        block = line["onegen"]
        key = str(block["key"])
        position = block.get("position")
        index = self.by_position.get(position) if isinstance(position, int) else None
        if index is None or self.keys[index] != key:
            index = self.by_key.get(key)
        if index is None:
            raise GoldExportError(f"{result.name}: line {number} ran example {key!r}, which {self.name} does not "
                                  "hold; pass the dataset the run read with --data")
        example = self.loaded.examples[index]
        for field, value in example.raw.items():
            if field not in _RESULT_FIELDS and line.get(field) != value:
                raise GoldExportError(f"{result.name}: line {number} ({key!r}) differs from that item of {self.name} "
                                      f"in {field!r}: the run read another file; pass it with --data")
        return example
