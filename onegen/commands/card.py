"""`python -m onegen card [MODEL]`: write the held-out metrics into a local model folder's card,
recomputed from the result files its weights wrote (matched by fingerprint, not by name), and the
confidence thresholds of its registry indexes (their calibration.json)."""
from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("model", nargs="?", help="registry name or local model folder (default: the embedded default)")
    p.add_argument("--results", default=None, help="folder of result files (default: assets/results)")


def main(args) -> int:
    from ..loading import load_model
    from ..model_card import index_calibrations, matching_results, write_card_metrics
    from ..registry import ASSETS, lookup

    entry = lookup(args.model)
    folder = Path(entry.source) if entry is not None and entry.embedded else Path(args.model or "")
    if not (folder / "README.md").is_file():
        print(f"error: {folder} is not a local model folder with a card (README.md); "
              "the card is written where the model was exported", file=sys.stderr)
        return 2
    results = Path(args.results) if args.results else ASSETS / "results"
    if not results.is_dir():
        print(f"error: {results} is not a folder of result files", file=sys.stderr)
        return 2
    fingerprint = load_model(str(folder), device="cpu").fingerprint
    sets = matching_results(results, fingerprint)
    try:  # the card names the folder as the repository does, never a path of this machine
        source = "assets/" + results.resolve().relative_to(ASSETS).as_posix()
    except ValueError:
        source = results.name
    calibrations = index_calibrations(entry.indexes if entry is not None else {}, fingerprint)
    card = write_card_metrics(folder, sets, fingerprint, source, calibrations)
    print(f"{card}: {len(sets)} result file(s) of fingerprint {fingerprint}: "
          + (", ".join(rs.path.name for rs in sets) or "none")
          + f"; calibrated indexes: {', '.join(name for name, _ in calibrations) or 'none'}")
    return 0
