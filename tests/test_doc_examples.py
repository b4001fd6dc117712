"""Every Python example of README.md and of the documentation pages runs, and every name it uses
exists: a documented name that does not exist fails CI.

The rules (for whoever writes an example):

1. Every fenced code block whose info string is ``python`` (```` ```python ````) in
   ``README.md`` and in ``docs/**/*.md`` is an example. The blocks of one page run in order in
   one namespace (like a notebook), in a fresh temporary working directory, with matplotlib's
   ``Agg`` backend.
2. A block that would run a whole experiment (minutes of work, a data set that is not
   shipped) is marked by the line ``<!-- skip-run: REASON -->`` right before its fence (blank
   lines between are allowed). Such a block is compiled, its import statements are run, and
   every dotted name reached from an imported name (``experiment.run``,
   ``neurovar.stats.fano_factor``) must resolve; every call of such a resolved function must
   bind to its signature (the keyword arguments shown must exist). Nothing else of it runs.
   A REASON is required.
3. Other fenced blocks (``bash``, ``toml``, plain) are not run.

Besides the blocks, every inline reference ```neurovar.a.b``` (optionally followed by a call,
```neurovar.a.b(x, y=...)```) in the same files must resolve to a module or attribute.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_MARK = re.compile(r"^\s*<!--\s*skip-run:\s*(?P<reason>\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
INLINE_REF = re.compile(r"`(neurovar(?:\.[A-Za-z_]\w*)+)(?:\([^`]*\))?`")


def _pages() -> list[Path]:
    pages = [ROOT / "README.md"]
    docs = ROOT / "docs"
    if docs.is_dir():
        pages += sorted(p for p in docs.rglob("*.md") if "_build" not in p.parts)
    return pages


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    skip_reason: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    """The ```python blocks of a markdown page, with their skip-run reason (or None)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m.group("fence"), len(m.group("indent"))
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        if m.group("info").lower() in ("python", "py", "python3"):
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            mark = SKIP_MARK.match(lines[k]) if k >= 0 else None
            body = "\n".join(ln[indent:] for ln in lines[i + 1 : j])
            blocks.append(Block(page, i + 1, body, mark.group("reason") if mark else None))
        i = j + 1
    return blocks


def _all_blocks() -> list[Block]:
    return [b for page in _pages() for b in python_blocks(page)]


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` -> ["a", "b", "c"]; None for anything that is not a dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _resolve(namespace: dict, chain: list[str], where: str):
    """Follow ``chain`` from an imported name through modules and classes; the last object."""
    obj = namespace[chain[0]]
    for k, attr in enumerate(chain[1:], start=1):
        if not isinstance(obj, (types.ModuleType, type)):
            return None  # attributes of a value (a function, a result) are not checked
        if not hasattr(obj, attr):
            # a submodule not imported yet is still a documented, existing name
            if isinstance(obj, types.ModuleType):
                try:
                    obj = importlib.import_module(f"{obj.__name__}.{attr}")
                    continue
                except ModuleNotFoundError:
                    pass
            pytest.fail(f"{where}: {'.'.join(chain[: k + 1])} does not exist")
        obj = getattr(obj, attr)
    return obj


def check_names_only(block: Block) -> None:
    """Rule 2: run the imports, resolve the dotted names, bind the calls."""
    tree = ast.parse(block.code, filename=block.where)
    compile(tree, block.where, "exec")
    namespace: dict = {}
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            exec(compile(ast.Module([node], []), block.where, "exec"), namespace)
            imported.update((a.asname or a.name).split(".")[0] for a in node.names)
    for node in ast.walk(tree):
        target = node.func if isinstance(node, ast.Call) else node
        chain = _chain(target) if isinstance(target, (ast.Attribute, ast.Name)) else None
        if not chain or chain[0] not in imported:
            continue
        obj = _resolve(namespace, chain, block.where)
        if isinstance(node, ast.Call) and callable(obj):
            if any(isinstance(a, ast.Starred) for a in node.args) or any(
                k.arg is None for k in node.keywords
            ):
                continue
            try:
                sig = inspect.signature(obj)
            except (TypeError, ValueError):
                continue
            try:
                sig.bind(*node.args, **{k.arg: None for k in node.keywords})
            except TypeError as err:
                pytest.fail(f"{block.where}: {'.'.join(chain)}(...) does not match its "
                            f"signature {sig}: {err}")


PAGES = [p for p in _pages() if python_blocks(p)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc_example__"}
    for block in python_blocks(page):
        if block.skip_reason is not None:
            check_names_only(block)
            continue
        code = compile(block.code, block.where, "exec")
        try:
            exec(code, namespace)
        except Exception as err:  # name the block, keep the traceback
            raise AssertionError(f"the example at {block.where} failed: {err!r}") from err
    import matplotlib.pyplot as plt

    plt.close("all")


def test_every_inline_reference_resolves():
    missing = []
    for page in _pages():
        for lineno, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for ref in INLINE_REF.findall(line):
                parts = ref.split(".")
                obj = None
                for k in range(len(parts), 0, -1):  # the longest importable prefix
                    try:
                        obj = importlib.import_module(".".join(parts[:k]))
                        break
                    except ModuleNotFoundError:
                        continue
                ok = obj is not None
                for attr in parts[k:] if ok else []:
                    if not hasattr(obj, attr):
                        ok = False
                        break
                    obj = getattr(obj, attr)
                if not ok:
                    missing.append(f"{page.relative_to(ROOT)}:{lineno}: {ref}")
    assert not missing, "documented names that do not exist:\n" + "\n".join(missing)


def test_skip_marks_have_a_reason_and_there_are_examples():
    blocks = _all_blocks()
    assert blocks, "README.md has no ```python example"
    for page in _pages():
        for k, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if "skip-run" in line:
                assert SKIP_MARK.match(line), f"{page.relative_to(ROOT)}:{k}: malformed {line!r}"


def test_the_checker_catches_a_missing_name(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- skip-run: needs a GPU -->\n\n```python\nfrom neurovar import experiment\n"
        "experiment.no_such_function('demo')\n```\n\n"
        "<!-- skip-run: slow -->\n```python\nfrom neurovar import experiment\n"
        "experiment.run('demo', 'out', no_such_keyword=1)\n```\n"
    )
    first, second = python_blocks(page)
    assert first.skip_reason == "needs a GPU" and second.skip_reason == "slow"
    first.page = second.page = ROOT / "README.md"  # for the message only
    with pytest.raises(pytest.fail.Exception, match="experiment.no_such_function"):
        check_names_only(first)
    with pytest.raises(pytest.fail.Exception, match="no_such_keyword"):
        check_names_only(second)
