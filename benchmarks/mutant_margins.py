"""Margins of every gate on every mutant of one CA block, and on the correct export (issue 21).

For ``yolov5_ca`` at ``--size`` and ``mobilenetv2_ca`` at ``--mnv2-size``, exports the
original and each mutant of ``benchmarks.mutants`` and prints, per export and gate, the
margin (largest error over bound; at most 1 passes) with the verdict, and how far the
mutant's float64 output is from the original's (max abs difference over the RMS) beside
PyTorch fp32's own distance from float64. A mutant that passes, or a correct export
that fails, is listed after the table and the exit status is 1.

    python -m benchmarks.mutant_margins --size 320
    python -m benchmarks.mutant_margins --size 320 --gates onnx,optimize --json margins.json
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from argparse import ArgumentParser
from pathlib import Path

from benchmarks.mutants import CORRECT, GATES, MUTANTS, Bench, Row, table, to_json, wrong_verdicts
from ca_export.export import executorch as et


def main() -> int:
    """Run the gates asked for and print the margins table."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320, help="yolov5_ca input size (square)")
    parser.add_argument("--mnv2-size", type=int, default=224, help="mobilenetv2_ca input size")
    parser.add_argument("--models", default="yolov5_ca,mobilenetv2_ca")
    parser.add_argument("--gates", default=",".join(GATES), help=f"any of {','.join(GATES)}")
    parser.add_argument("--mutants", default=",".join(MUTANTS))
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args()
    gates = [g for g in args.gates.split(",") if g != "executorch" or et.EXTRA.available()]
    sizes = {"yolov5_ca": args.size, "mobilenetv2_ca": args.mnv2_size}
    rows: list[Row] = []
    effects: dict[tuple[str, str], float] = {}
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models.split(","):
            bench = Bench(model, sizes[model], Path(folder))
            effects[(model, CORRECT)] = bench.noise()
            for name in [CORRECT, *args.mutants.split(",")]:
                if name != CORRECT:
                    effects[(model, name)] = bench.effect(name)
                for gate in gates:
                    print(f"{model} {sizes[model]} {name} {gate} ...", file=sys.stderr, flush=True)
                    rows.append(bench.gate(name, gate))
    print(
        f"yolov5_ca at {args.size}x{args.size}, mobilenetv2_ca at {args.mnv2_size}x"
        f"{args.mnv2_size}; margin = largest error over bound (<= 1 passes); fp64 rel diff "
        "of a mutant: its float64 output against the original's; of 'correct': PyTorch "
        "fp32 against float64"
    )
    print(table(rows, effects))
    if args.json is not None:
        args.json.write_text(to_json(rows))
    wrong = wrong_verdicts(rows)
    for row in wrong:
        print(f"WRONG VERDICT: {row}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
