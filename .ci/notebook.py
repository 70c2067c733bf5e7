"""Execute notebooks/quickstart.ipynb as a user would, on a small setting; exit 1 if any cell fails.

    python .ci/notebook.py                      # digits, 3 epochs, the run folder in a temporary folder
    python .ci/notebook.py --dataset=mnist --epochs=60 --save=executed.ipynb

The notebook's parameters cell (tagged "parameters") keeps what a Colab user wants (MNIST, 60 epochs); the
values given here go into a cell inserted right after it, as papermill does, so the notebook itself is run
unchanged. The run folder goes to a temporary folder unless --out is given, so a run already in runs/ is
neither reused nor refused. Needs nbclient, nbformat and ipykernel (the docs extra).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", default=None, help="run folder (default: a temporary one, removed afterwards)")
    p.add_argument("--timeout", type=int, default=900, help="seconds one cell may take (default 900)")
    p.add_argument("--save", default=None, help="write the executed notebook here")
    args = p.parse_args(argv)

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(at) != 1:
        print(f"{NOTEBOOK.relative_to(ROOT)}: expected one cell tagged 'parameters', found {len(at)}")
        return 1
    with tempfile.TemporaryDirectory(prefix="ae_jax_notebook_") as tmp:
        out = args.out or str(Path(tmp) / "beta_vae_beta2")
        overrides = (f"# Parameters injected by .ci/notebook.py\nDATASET = {args.dataset!r}\nEPOCHS = {args.epochs}\n"
                     f"SEEDS = {args.seeds}\nOUT = {out!r}\n")
        nb.cells.insert(at[0] + 1, nbformat.v4.new_code_cell(overrides, metadata={"tags": ["injected-parameters"]}))
        client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT)}})
        t0 = time.perf_counter()
        failed = None
        try:
            client.execute()
        except CellExecutionError as e:
            failed = e
        finally:
            if args.save:
                nbformat.write(nb, args.save)
        seconds = time.perf_counter() - t0
    if failed is not None:
        print(failed)
        print(f"{NOTEBOOK.relative_to(ROOT)}: a cell failed (above), after {seconds:.0f} s")
        return 1
    cells = sum(c.cell_type == "code" for c in nb.cells)
    print(f"{NOTEBOOK.relative_to(ROOT)}: {cells} code cells ran on {args.dataset} ({args.epochs} epochs, "
          f"{args.seeds} seeds) in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
