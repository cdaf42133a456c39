"""README's Python example runs as written and learns its task."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs_and_learns(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README has no python example"
    ns = {}
    exec(compile(blocks[0], "README.md", "exec"), ns)
    assert float(ns["loss"]) < 0.05
    assert ns["weights"].shape == (64, ns["ids"].shape[1], 6)
    assert (ns["ids"][:, :6] == ns["src"][:, ::-1]).mean() > 0.95


def test_readme_quick_start_matches_ci():
    text = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest -q" in text and "python -m pytest -q" in ci
    assert "attnseq train --data date --out runs/date --quick" in text
