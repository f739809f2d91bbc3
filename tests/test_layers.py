"""The packages form layers, bottom to top: models -> training -> serving -> app -> benchmarks. A module
imports only its own package and those below it, and no modules import each other in a circle."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("models", "training", "serving", "app", "benchmarks")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """Every project module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from pkg import mod` imports pkg.mod where that is a module, else names from pkg
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in LAYERS)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}
    return {name: {i for i in project_imports(path) if i in files and i != name} for name, path in files.items()}


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{module} imports {imported}" for module, imports in graph().items() for imported in imports
              if LAYERS.index(imported.split(".")[0]) > LAYERS.index(module.split(".")[0])]
    assert not upward, upward


def test_no_import_cycles():
    edges, cycles = graph(), []
    state = {}  # module -> "open" while on the path, "done" after

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(edges[module]):
            if state.get(imported) == "open":
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, path + [imported])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_the_model_maths_loads_without_engines_web_or_training():
    loaded = subprocess.run([sys.executable, "-c", "import sys, models.seq2seq, models.registry; "
                             "[__import__(f'models.{n}') for n in ('transformer', 'memsizer', 'performer', 'memoryformer')]; "
                             "print(' '.join(sys.modules))"], cwd=ROOT, capture_output=True, text=True, check=True)
    modules = loaded.stdout.split()
    assert not [m for m in modules if m.split(".")[0] in ("ctranslate2", "flask", "training", "serving", "app")
                or m.startswith("models.runtimes")], modules
