"""``python -m core.data.processed --dataset data/ml-100k [--out FOLDER]``: a prepared dataset
written in the distillation seed's processed layout (the library is ``core.data.processed``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from core.cli import run
from core.data.processed import FILES, write_processed
from core.data.sequences import SequenceData
from core.data.splits import leave_one_out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.data.processed",
                                     description="Write a prepared dataset in the distillation seed's processed layout (JSON).")
    parser.add_argument("--dataset", required=True, help="prepared dataset folder (e.g. data/ml-100k)")
    parser.add_argument("--out", help="output folder (default: <dataset>/processed)")
    args = parser.parse_args(argv)
    data = SequenceData.load(args.dataset)
    out = write_processed(data, leave_one_out(data), args.out or Path(args.dataset) / "processed")
    print(f"wrote {', '.join(f + '.json' for f in FILES)} -> {out}")
    return 0


if __name__ == "__main__":
    run(main)
