"""The library's shape: no import cycles, no borrowed private names (ruff, configured in
pyproject.toml, checks the rest: imports at the top, the banned APIs)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "cpbook"


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text())
    return out


def imported(name: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom reads from."""
    if not node.level:
        return node.module or ""
    package = name.split(".")[:-node.level] if name.count(".") else [name]
    return ".".join(package + ([node.module] if node.module else []))


def dependencies(mods) -> dict[str, set[str]]:
    deps = {}
    for name, tree in mods.items():
        found = set()
        for node in tree.body:      # top-level imports: the ones that run at import time
            if isinstance(node, ast.ImportFrom):
                base = imported(name, node)
                found |= {base} | {f"{base}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        deps[name] = {d for d in found if d in mods and d != name}
    return deps


def test_no_module_imports_itself_through_others():
    deps = dependencies(modules())

    def reaches(start, target, seen):
        for d in deps[start]:
            if d == target or (d not in seen and (seen.add(d) or reaches(d, target, seen))):
                return True
        return False

    cycles = [m for m in deps if reaches(m, m, set())]
    assert not cycles, f"import cycles through: {cycles}"


def test_no_module_imports_a_private_name_of_another():
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and imported(name, node).startswith("cpbook"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{name} imports {private} from {imported(name, node)}"

