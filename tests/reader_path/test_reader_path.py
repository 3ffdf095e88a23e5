"""The reader's path: every chapter runs from its own first cell on a bare Python.

For each chapter this stage does what a reader on Colab does, and nothing more:

1. A fresh virtual environment with only ``colab_base.txt`` (it stands for Colab's image). It is
   built once and cached in ``.cache/reader-path/`` (git-ignored), keyed by that file's content.
2. The chapter's own first-cell ``pip install`` line, run as written, except that the repository
   URL from ``_config.yml`` becomes this checkout (``git+file://localhost/<path>@<branch>``).
   Chapters with the same line share one environment, layered on the base: a ``.pth`` file puts
   the base's packages on its path, so the line installs only what the base lacks.
3. The notebook copied alone into an empty temporary folder and executed there with
   ``BOOK_SMOKE=1`` by nbclient, in a kernel of that environment.

pip installs the *committed* state of the branch: commit before running this stage. It runs only
with ``READER_PATH=1`` (``make test`` sets it): ``READER_PATH=1 python -m pytest tests/reader_path``.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE_FILE = Path(__file__).with_name("colab_base.txt")
CACHE = ROOT / ".cache" / "reader-path"
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 1800

pytestmark = pytest.mark.skipif(os.environ.get("READER_PATH") != "1",
                                reason="the reader's path runs with READER_PATH=1 (make test sets it)")


def first_cell_install(notebook: Path) -> str:
    """The ``pip install ...`` command of the notebook's first code cell (after ``&&``)."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    first = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
    for line in first.splitlines():
        m = re.match(r"!\s*\[ -e /content \] && (pip install .*)$", line.strip())
        if m:
            return m.group(1)
    raise AssertionError(f"{notebook.name}: no `! [ -e /content ] && pip install ...` line in the first cell")


def local_install(command: str, python: Path) -> list[str]:
    """The first-cell command with this checkout for the repository URL, run by ``python -m pip``."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]
    remote = f"git+{config['url'].rstrip('/')}@{config['branch']}"
    if remote not in command:
        raise AssertionError(f"the install line does not name {remote}: {command}")
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    ref = git("rev-parse", "HEAD") if branch == "HEAD" else branch
    words = shlex.split(command.replace(remote, f"git+file://localhost{ROOT}@{ref}"))
    assert words[:2] == ["pip", "install"], command
    return [str(python), "-m", "pip", *words[1:]]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def run(cmd: list[str], log: Path) -> None:
    """Run ``cmd``, appending its output to ``log``; on failure, fail with the log's tail."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
    if done.returncode:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{tail}")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would leak the test environment into the reader's."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "JUPYTER_PATH")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def base_interpreter() -> str:
    """The Python this test environment was made from (not the test venv's own)."""
    return getattr(sys, "_base_executable", sys.executable)


def base_distributions() -> set[str]:
    """The distributions of ``colab_base.txt`` (normalised names)."""
    lines = BASE_FILE.read_text().splitlines()
    return {normalise(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0])
            for line in lines if line.strip() and not line.startswith("#")}


def installed_here(venv: Path) -> set[str]:
    """The distributions installed in ``venv`` itself (not those it sees through the base)."""
    return {normalise(d.name.split("-")[0]) for d in site_packages(venv).glob("*.dist-info")}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Lock:
    """An exclusive file lock, so that two pytest workers never build the same environment."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w")

    def __enter__(self):
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)


def base_venv() -> Path:
    """The cached bare environment of ``colab_base.txt`` (built on first use)."""
    key = hashlib.sha256(BASE_FILE.read_bytes() + sys.version.encode()).hexdigest()[:12]
    venv = CACHE / f"base-{key}"
    with Lock(CACHE / "base.lock"):
        if not (venv / "ready").exists():
            shutil.rmtree(venv, ignore_errors=True)
            log = CACHE / f"base-{key}.log"
            log.write_text("")
            start = time.perf_counter()
            run([base_interpreter(), "-m", "venv", str(venv)], log)
            run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(BASE_FILE)], log)
            (venv / "ready").write_text(f"built in {time.perf_counter() - start:.0f} s\n")
    return venv


def chapter_venv(command: str) -> Path:
    """The environment of one first-cell install line: the base plus what that line installs.

    Built once per line and per commit (environments of other commits are removed then), so the
    package in it is always the branch's current commit.
    """
    base = base_venv()
    commit = git("rev-parse", "HEAD")[:12]
    key = hashlib.sha256(command.encode()).hexdigest()[:12]
    venv = CACHE / f"run-{commit}" / f"line-{key}"
    with Lock(CACHE / "run.lock"):
        if not (venv / "ready").exists():
            for old in CACHE.glob("run-*"):
                if old.name != f"run-{commit}":
                    shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(venv, ignore_errors=True)
            venv.parent.mkdir(parents=True, exist_ok=True)
            log = venv.with_suffix(".log")
            log.write_text("")
            run([base_interpreter(), "-m", "venv", str(venv)], log)
            # the base's packages are on this environment's path, as Colab's are on a reader's
            (site_packages(venv) / "_colab_base.pth").write_text(f"{site_packages(base)}\n")
            python = venv / "bin" / "python"
            run(local_install(command, python), log)
            replaced = installed_here(venv) & base_distributions()
            assert not replaced, (f"`{command}` replaces the reader's own {sorted(replaced)}: "
                                  "loosen the package's bounds so that Colab's versions satisfy them")
            kernel = venv / "jupyter" / "kernels" / "reader"
            kernel.mkdir(parents=True)
            (kernel / "kernel.json").write_text(json.dumps({
                "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "reader", "language": "python"}))
            (venv / "ready").write_text(command + "\n")
    return venv


@pytest.fixture(scope="session", autouse=True)
def committed_state():
    if git("status", "--porcelain", "--untracked-files=no"):
        warnings.warn("uncommitted changes: the reader's path installs the last commit of the branch")


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_alone_from_its_first_cell(notebook, tmp_path_factory):
    import nbformat
    from nbclient import NotebookClient

    venv = chapter_venv(first_cell_install(notebook))
    folder = tmp_path_factory.mktemp(notebook.stem)  # empty, and outside the repository
    assert not list(folder.iterdir()) and ROOT not in folder.parents
    copy = folder / notebook.name
    shutil.copy(notebook, copy)
    nb = nbformat.read(copy, as_version=4)
    os.environ["JUPYTER_PATH"] = str(venv / "jupyter")  # where nbclient finds the "reader" kernel
    client = NotebookClient(nb, kernel_name="reader", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(folder)}})
    client.execute(env=clean_env(BOOK_SMOKE="1"))  # raises CellExecutionError at a failing cell
    first = next(c for c in nb.cells if c.cell_type == "code")
    line = "".join(o.get("text", "") for o in first.outputs)
    assert "effnet_tutorial" in line and "torch" in line, f"no environment line: {line!r}"


def test_bare_install_names_the_coco_extra_before_training(tmp_path):
    """``train`` without pycocotools (a chapter without the coco extra) stops at once."""
    bare = next(first_cell_install(p) for p in CHAPTERS if "effnet_tutorial @" in first_cell_install(p))
    python = chapter_venv(bare) / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import pycocotools"], env=clean_env(),
                          capture_output=True).returncode != 0, "the bare environment has pycocotools"
    start = time.perf_counter()
    done = subprocess.run([str(python), "-m", "effnet_tutorial", "train", "--data", str(tmp_path),
                           "--output", str(tmp_path / "run")], capture_output=True, text=True,
                          env=clean_env(), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert ("error: COCO evaluation needs pycocotools: pip install 'effnet_tutorial[coco]' "
            "(or pass --val-split '' to train without evaluation)") in done.stderr
    assert not (tmp_path / "run").exists()
    print(f"train without pycocotools stopped after {time.perf_counter() - start:.1f} s")
