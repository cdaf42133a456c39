"""The package's floors: ``attnseq.nn`` (layers, the model and its metadata, the searches) imports nothing
from the floors above it, ``attnseq.run`` (a run: options, training, checkpoints, decoding many rows) above all.
Read from the source with ast, so an import inside a function counts as much as one at the top."""
import ast
from pathlib import Path

import attnseq

PACKAGE = Path(attnseq.__file__).resolve().parent
NN_MAY_IMPORT = ("attnseq.nn", "attnseq.data", "attnseq.errors")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved to absolute names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            if node.module is None:                                 # from . import kernels
                found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_imports_are_resolved_as_python_does():
    """The resolver itself, on the package's own files: a relative import two floors up is seen."""
    assert "attnseq.nn.search" in imports(PACKAGE / "nn" / "decoders.py")
    assert "attnseq.nn.kernels" in imports(PACKAGE / "nn" / "attention.py")         # from . import kernels
    assert "attnseq.data.tokenizers" in imports(PACKAGE / "nn" / "model.py")        # from ..data.tokenizers
    assert "attnseq.run.parallel" in imports(PACKAGE / "run" / "decoding.py")       # from .parallel


def test_nothing_in_nn_imports_run():
    files = sorted((PACKAGE / "nn").rglob("*.py"))
    assert len(files) > 10
    wrong = {module_name(f): sorted(m for m in imports(f) if m.startswith("attnseq.run"))
             for f in files}
    assert {k: v for k, v in wrong.items() if v} == {}
    beyond = {module_name(f): sorted(m for m in imports(f) if m.startswith("attnseq")
                                     and not m.startswith(NN_MAY_IMPORT)) for f in files}
    assert {k: v for k, v in beyond.items() if v} == {}
