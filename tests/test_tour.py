"""docs/tour.ipynb, the chapter-8 tour: stored without outputs, and run end to end (every cell) with nbclient;
a cell that raises fails the test. A check cell appended to it then asserts, in the notebook's own kernel,
that its hand-computed attention is the Attention layer's and that its one-minute training learned the task."""
import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "tour.ipynb"

CHECKS = '''
import numpy as np
from attnseq import Attention
fresh = Attention()
fresh_context = fresh.forward(q[:, None, :], hs, mask)[:, 0]
assert a.shape == src.shape and np.allclose(a.sum(axis=1), 1) and (a[~mask] == 0).all() and (a[mask] > 0).all()
np.testing.assert_allclose(a, fresh.weights[:, 0], rtol=1e-12, atol=1e-15)
np.testing.assert_allclose(context, fresh_context, rtol=1e-12, atol=1e-15)
assert np.abs(context - hs[:, 0]).max() > 1e-3              # a real mixture, not one row of hs
assert result["test"]["exact_match"] > 0.98, result["test"]
assert len(history.validations()) == 1 and len(history.entries) > 20
'''


def _needs(module):
    return pytest.importorskip(module, reason=f"needs the 'test' extra ({module} is not installed): "
                                              "pip install -e '.[test]'")


def test_the_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 10
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, "".join(cell["source"])[:60]
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    sources = "\n".join("".join(c["source"]) for c in code)
    for piece in ("hs @ q", "Attention()", "assert_allclose", "AttentionDecoder(", "quick=True", "plot_attention(",
                  "attnseq.explore(", "explore_history(", "beam_search(", "my_date"):
        assert piece in sources, piece


@pytest.mark.slow
def test_the_notebook_runs_end_to_end(tmp_path):
    nbformat, nbclient = _needs("nbformat"), _needs("nbclient")
    _needs("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CHECKS))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()                                          # CellExecutionError names a cell that raised
    outputs = {"".join(c.source).splitlines()[0]: c.outputs for c in nb.cells if c.cell_type == "code"}
    html = [o for o in outputs["attnseq.explore_history(RUN)"] if "text/html" in o.get("data", {})]
    assert html and "<iframe srcdoc=" in html[0]["data"]["text/html"] and "epoch-slider" in html[0]["data"]["text/html"]
    pngs = [k for k, out in outputs.items() if any("image/png" in o.get("data", {}) for o in out)]
    assert len(pngs) == 2                                      # the two heatmaps
    assert (tmp_path / "runs" / "tour" / "best").is_dir()      # the run went where the notebook said
