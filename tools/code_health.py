"""Code-health yardsticks (issue 15): SQL lines inside Python strings, lines in sql/, the longest
functions. Run: .venv/bin/python tools/code_health.py [REPO]"""

from __future__ import annotations

import ast
import pathlib
import re
import sys

# A string holds SQL when, stripped, it starts with a statement keyword or is a clause fragment
STATEMENT = re.compile(
    r"^\s*\(?\s*(select|with|create|insert|copy|attach|detach|update|delete|drop|alter|set|pragma"
    r"|install|load|from|join|left join|where|group by|order by|union|case|coalesce|sum|count)\b",
    re.I,
)


def _strings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield node, "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node, node.value


def sql_lines(path: pathlib.Path) -> int:
    tree = ast.parse(path.read_text())
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    lines: set[int] = set()
    for node, text in _strings(tree):
        if id(node) in docs or not STATEMENT.search(text):
            continue
        if len(text.split()) < 3:
            continue
        lines |= set(range(node.lineno, node.end_lineno + 1))
    return len(lines)


def functions(root: pathlib.Path):
    for p in sorted(list((root / "pipelines").rglob("*.py")) + list((root / "dags").glob("*.py"))):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                yield n.end_lineno - n.lineno + 1, f"{p.relative_to(root)}:{n.lineno} {n.name}"


def main() -> None:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    total = 0
    files = sorted(list((root / "pipelines").rglob("*.py")) + list((root / "dags").glob("*.py")))
    for p in files:
        if "/assets/" in str(p):
            continue
        k = sql_lines(p)
        if k:
            print(f"{k:5d}  {p.relative_to(root)}")
            total += k
    print(f"{total:5d}  SQL lines in Python strings")
    sql = sum(len(p.read_text().splitlines()) for p in (root / "sql").rglob("*.sql"))
    print(f"{sql:5d}  lines in sql/ ({len(list((root / 'sql').rglob('*.sql')))} files)")
    fns = sorted(functions(root), reverse=True)
    print(f"{sum(1 for n, _ in fns if n > 80):5d}  functions over 80 lines; the longest:")
    for n, where in fns[:8]:
        print(f"{n:9d}  {where}")


if __name__ == "__main__":
    main()
