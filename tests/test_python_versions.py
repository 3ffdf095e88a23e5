"""The package runs on the lowest Python that pyproject.toml claims (checked statically by vermin:
the machines that test it have no PyTorch for other Python versions)."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def claimed_minimum() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^requires-python = ">=(3\.\d+)"$', text, re.MULTILINE).group(1)


def vermin(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    if exe is None:
        pytest.fail("vermin is not installed (it is in requirements.txt)")
    return subprocess.run([exe, "-q", "--no-tips", "--eval-annotations", "--feature", "union-types",
                           "--violations", *args], capture_output=True, text=True)


def test_package_needs_nothing_newer_than_the_claimed_python():
    done = vermin(f"--target={claimed_minimum()}-", str(ROOT / "effnet_tutorial"))
    assert done.returncode == 0, f"needs a newer Python than {claimed_minimum()}:\n{done.stdout}"


def test_the_check_finds_a_newer_feature(tmp_path):
    """The same check fails on code that needs more than the claimed minimum (3.11's tomllib)."""
    (tmp_path / "new.py").write_text("import tomllib\n")
    assert vermin(f"--target={claimed_minimum()}-", str(tmp_path)).returncode != 0


def test_readme_states_the_same_minimum():
    assert f"Python {claimed_minimum()} or newer" in (ROOT / "README.md").read_text()
