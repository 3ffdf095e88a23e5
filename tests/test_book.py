"""Structure of the book: table of contents, stored outputs, setup cells, exercises, citations.

These tests read files only (nothing is executed), so they run in a second. The notebooks
themselves are executed by nbval (``make test``), and the book is built with warnings as errors.
"""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
#: The chapters (``NN_name.ipynb``); the other notebook is the landing page, ``index.ipynb``,
#: which follows the same conventions except that it has no exercises.
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def markdown_cells(nb: dict) -> list[str]:
    return [source(c) for c in nb["cells"] if c["cell_type"] == "markdown"]


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def toc_files(entry) -> list[str]:
    """Every ``file:`` in a jb-book table of contents, depth first."""
    found = []
    if isinstance(entry, dict):
        for key, value in entry.items():
            if key in ("file", "root"):
                found.append(value)
            else:
                found.extend(toc_files(value))
    elif isinstance(entry, list):
        for item in entry:
            found.extend(toc_files(item))
    return found


def repository_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    return config["repository"]["url"].rstrip("/")


def test_there_are_notebooks():
    assert NOTEBOOKS, "no book/*.ipynb found"


def test_toc_and_notebooks_agree():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    assert toc["format"] == "jb-book"
    listed = toc_files(toc)
    assert len(listed) == len(set(listed)), f"a file is listed twice in _toc.yml: {listed}"
    missing = [f for f in listed if not any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    on_disk = {str(p.relative_to(ROOT).with_suffix("")) for p in NOTEBOOKS}
    unlisted = sorted(on_disk - set(listed))
    assert not unlisted, f"notebooks missing from _toc.yml: {unlisted}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_executed(path):
    nb = load(path)
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
    cells = code_cells(nb)
    counts = [c.get("execution_count") for c in cells]
    assert None not in counts, (
        f"{path.name}: cells {[i for i, n in enumerate(counts) if n is None]} (code-cell index) "
        "were not executed; run the notebook top to bottom and save it"
    )
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..{len(cells)}: "
        "execute it once, in order, in a fresh kernel"
    )
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{path.name}: code cell {i} stores an error"
            assert WIDGET_MIME not in out.get("data", {}), f"{path.name}: code cell {i} stores a widget"
    assert "widgets" not in nb["metadata"], f"{path.name}: notebook metadata stores widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_title_and_setup_cell(path):
    nb = load(path)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and source(first).startswith("# "), (
        f"{path.name}: the first cell must be a markdown '# Title'"
    )
    titles = [line for text in markdown_cells(nb) for line in text.splitlines()
              if re.match(r"# \S", line)]
    assert len(titles) == 1, f"{path.name}: expected one '# ' title, found {titles}"
    setup = source(code_cells(nb)[0]).splitlines()
    pattern = (r'! \[ -e /content \] && pip install -q "effnet_tutorial(\[[a-z,]+\])? @ git\+'
               + re.escape(repository_url()) + r'@main"')
    assert any(re.fullmatch(pattern, line) for line in setup), (
        f"{path.name}: the first code cell must install the package (with the extras the chapter "
        f'needs) with exactly\n! [ -e /content ] && pip install -q "effnet_tutorial[EXTRAS] @ '
        f'git+{repository_url()}@main"\n(the repository URL comes from _config.yml), found:\n'
        + "\n".join(setup)
    )
    assert "import effnet_tutorial as et" in setup and "print(et.environment_line())" in setup


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def dist_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def colab_base() -> set[str]:
    """What the reader's Python has before a chapter's first cell (tests/reader_path/colab_base.txt)."""
    lines = (ROOT / "tests" / "reader_path" / "colab_base.txt").read_text().splitlines()
    return {dist_name(line) for line in lines if line.strip() and not line.startswith("#")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_installs_everything_the_chapter_imports(path):
    """Colab's packages, the package's own dependencies and the extras the first cell names cover
    every import; nothing is book-build tooling or a file of this checkout. (The reader's-path
    stage of ``make test`` runs the chapters that way; this finds a gap in a second.)"""
    project = pyproject()["project"]
    nb = load(path)
    cells = code_cells(nb)
    have = colab_base() | {dist_name(r) for r in project["dependencies"]}
    m = re.search(r"effnet_tutorial\[([a-z,]+)\] @", source(cells[0]))
    for extra in (m.group(1).split(",") if m else []):
        have |= {dist_name(r) for r in project["optional-dependencies"][extra]}
    missing = {}
    for i, cell in enumerate(cells):
        code = source(cell)
        for name in imported_top_level_names(code) - set(sys.stdlib_module_names) - {"effnet_tutorial"}:
            dist = READER_DISTRIBUTION.get(name, name).lower().replace("_", "-")
            if dist not in have:
                missing.setdefault(name, i)
        assert "sys.path" not in code and "../" not in code and '"..")' not in code, (
            f"{path.name}, code cell {i}: reads from the checkout, which a reader on Colab does not have")
    assert not missing, (f"{path.name} imports what its first cell does not install (name: code cell): "
                         f"{missing}; add the extra that has it to the install line")


# Import names whose distribution on PyPI has another name, as a reader's pip sees them.
READER_DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "myst_nb": "myst-nb", "IPython": "ipython",
                       "skimage": "scikit-image"}


def exercises_of(nb: dict) -> tuple[list[str], list[str], int]:
    """Labels of the exercises and of the solutions, in order, and the number of solution ends."""
    exercises, solutions, ends = [], [], 0
    for text in markdown_cells(nb):
        for m in re.finditer(r"^```\{exercise\}[^\n]*\n:label:\s*(\S+)", text, re.MULTILINE):
            exercises.append(m.group(1))
        solutions += re.findall(r"^```\{solution-start\}\s+(\S+)", text, re.MULTILINE)
        ends += len(re.findall(r"^```\{solution-end\}", text, re.MULTILINE))
    return exercises, solutions, ends


def test_every_notebook_is_a_chapter_or_the_landing_page():
    assert {p.name for p in NOTEBOOKS} - {p.name for p in CHAPTERS} <= {"index.ipynb"}
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    assert toc["root"] == "book/index"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_has_exercises_with_solutions(path):
    exercises, solutions, ends = exercises_of(load(path))
    assert len(exercises) >= 3, f"{path.name}: {len(exercises)} exercises, at least 3 wanted"
    assert solutions == exercises, (
        f"{path.name}: solution-start labels {solutions} do not match the exercises {exercises}"
    )
    assert ends == len(solutions), f"{path.name}: {len(solutions)} solution-start, {ends} solution-end"
    chapter = int(path.name.split("_")[0])
    wrong = [label for label in exercises if not label.startswith(f"ch{chapter}-")]
    assert not wrong, f"{path.name}: labels must start with 'ch{chapter}-': {wrong}"


def test_exercise_labels_are_unique_in_the_book():
    labels = [label for p in NOTEBOOKS for label in exercises_of(load(p))[0]]
    assert len(labels) == len(set(labels)), f"duplicate exercise labels: {labels}"


CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def cited_keys(text: str) -> set[str]:
    return {key.strip() for group in CITE.findall(text) for key in group.split(",") if key.strip()}


def test_every_citation_is_in_the_bibliography():
    bib = (ROOT / "references.bib").read_text(encoding="utf-8")
    defined = re.findall(r"^@\w+\{([^,\s]+),", bib, re.MULTILINE)
    assert len(defined) == len(set(defined)), "references.bib defines a key twice"
    missing = {}
    pages = [(p.name, "\n".join(markdown_cells(load(p)))) for p in NOTEBOOKS]
    pages += [(p.name, p.read_text(encoding="utf-8")) for p in sorted(BOOK.glob("*.md"))]
    for name, text in pages:
        unknown = sorted(cited_keys(text) - set(defined))
        if unknown:
            missing[name] = unknown
    assert not missing, f"cited but not in references.bib: {missing}"


def test_citation_pattern_finds_keys():
    text = "as {cite:p}`tan2019efficientnet, lin2017focal` and {cite:t}`hu2018squeeze` show"
    assert cited_keys(text) == {"tan2019efficientnet", "lin2017focal", "hu2018squeeze"}


def package_modules() -> list[str]:
    """Dotted names of every public module of the package, found from its files."""
    package = ROOT / "effnet_tutorial"
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(p.startswith("_") for p in parts):
            names.append(".".join(parts))
    return names


def test_api_reference_documents_every_module():
    api = (BOOK / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. automodule:: (\S+)", api, re.MULTILINE))
    missing = [m for m in package_modules() if m not in documented]
    assert not missing, f"add a section with '.. automodule::' to book/api.md for: {missing}"
    stale = sorted(documented - set(package_modules()))
    assert not stale, f"book/api.md documents modules that do not exist: {stale}"


# Import names whose distribution on PyPI has another name.
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "myst_nb": "myst-nb", "IPython": "ipykernel",
                "skimage": "scikit-image"}


def imported_top_level_names(code: str) -> set[str]:
    """Absolute imports of a piece of Python; shell (``!``) and magic (``%``) lines are skipped."""
    lines = [line for line in code.splitlines() if not line.lstrip().startswith(("!", "%"))]
    tree = ast.parse("\n".join(lines))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_in_requirements():
    """A fresh `make test` installs only requirements.txt: anything imported must be there."""
    wanted = set()
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            wanted.add(re.split(r"[=<>!~\[; ]", line)[0].lower().replace("_", "-"))
    sources = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
               for folder in ("effnet_tutorial", "tests", "benchmarks")
               for p in sorted((ROOT / folder).rglob("*.py"))}
    for path in NOTEBOOKS:
        for i, cell in enumerate(code_cells(load(path))):
            sources[f"{path.name}, code cell {i}"] = source(cell)
    local = {"effnet_tutorial", "tests", "helpers", "conftest", "__future__"}
    local |= {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    missing = {}
    for where, code in sources.items():
        for name in imported_top_level_names(code) - set(sys.stdlib_module_names) - local:
            if DISTRIBUTION.get(name, name).lower().replace("_", "-") not in wanted:
                missing.setdefault(name, where)
    assert not missing, f"imported but not in requirements.txt (name: first place): {missing}"


def chapter_titles() -> dict[str, str]:
    """``"Chapter N"`` (numbered chapters, in the order of ``_toc.yml``) or ``"the appendix"``
    -> the notebook's title, as the package's ``In the book:`` lines name them."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    titles, number = {}, 0
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            path = ROOT / (chapter["file"] + ".ipynb")
            if not path.exists():
                continue
            title = next(line[2:].strip() for line in markdown_cells(load(path))[0].splitlines()
                         if line.startswith("# "))
            if part.get("numbered"):
                number += 1
                titles[f"Chapter {number}"] = title
            elif part["caption"] == "Appendix":
                titles["the appendix"] = title.removeprefix("Appendix: ")
    return titles


@pytest.mark.parametrize("path", sorted((ROOT / "effnet_tutorial").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_module_names_its_chapter_once(path):
    """One ``In the book:`` line per module docstring, naming a chapter by its real title;
    no per-function cross-references to drift out of date."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert "Introduced in" not in path.read_text(encoding="utf-8")
    doc = ast.get_docstring(tree) or ""
    refs = re.findall(r"^In the book: (Chapter \d+|the appendix), \*(.+)\*\.$", doc, re.MULTILINE)
    if path.name in ("__main__.py",) or (path.name == "__init__.py" and path.parent.name != "benchmark"
                                         and path.parent.name != "fast"):
        assert not refs
        return
    assert len(refs) == 1, f"{path}: the module docstring needs one 'In the book: ...' line"
    where, title = refs[0]
    titles = chapter_titles()
    assert titles.get(where) == title, f"{path}: {where} is titled {titles.get(where)!r}"


def load_copyright_extension():
    import importlib.util

    spec = importlib.util.spec_from_file_location("copyright_year", ROOT / "_ext" / "copyright_year.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copyright_year_comes_from_the_build_not_the_config():
    """_config.yml names the holder only; the local extension it loads adds the build's year."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert not re.search(r"(19|20)\d\d", str(config["copyright"])), (
        f"_config.yml hard-codes a year in copyright: {config['copyright']!r}; "
        "_ext/copyright_year.py adds the build's year")
    assert config["sphinx"]["local_extensions"] == {"copyright_year": "_ext"}
    ext = load_copyright_extension()
    import time

    assert ext.build_year({}) == time.gmtime().tm_year
    assert ext.build_year({"SOURCE_DATE_EPOCH": "1767225600"}) == 2026  # 2026-01-01 00:00 UTC
    assert ext.copyright_line(config["copyright"], 2031) == f"2031, {config['copyright']}"
    with pytest.raises(ValueError):
        ext.copyright_line("2025, someone", 2031)
