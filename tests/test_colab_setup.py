"""The notebook's set-up cell as Colab runs it, in a real Jupyter kernel with a stand-in
``google.colab`` (its ``drive.mount`` and ``output.enable_custom_widget_manager`` only write what
they were asked into a log).

- ``REPO_URL`` left as the placeholder, or naming a repository that does not answer: the cell stops
  Run all with one short message (no traceback), before installing or mounting anything.
- ``REPO_URL`` naming a repository that answers (a local git repository here): the cell clones it,
  installs its requirements, turns on the widget manager, then mounts Drive, in that order.
"""

from __future__ import annotations

import re
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from .conftest import REPO

pytestmark = [pytest.mark.notebook, pytest.mark.subprocess]

NOTEBOOK = REPO / "ddrm_demo.ipynb"


def setup_source() -> str:
    [cell] = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells
              if c.cell_type == "code" and "REPO_URL = " in c.source]
    return cell.source


def with_line(source: str, name: str, value: str) -> str:
    changed, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", source, flags=re.M)
    assert count == 1, name
    return changed


def fake_colab(folder):
    """A ``google.colab`` package that logs each call to ``folder/colab.log``."""
    package = folder / "stub" / "google" / "colab"  # no google/__init__.py: a namespace package
    package.mkdir(parents=True)
    log = folder / "colab.log"
    (package / "__init__.py").write_text("")
    (package / "drive.py").write_text(f"def mount(path):\n    open({str(log)!r}, 'a').write(f'mount {{path}}\\n')\n")
    (package / "output.py").write_text(
        f"def enable_custom_widget_manager():\n    open({str(log)!r}, 'a').write('widgets\\n')\n")
    return folder / "stub", log


def run_in_colab(folder, source: str):
    """Run all on [import the fake google.colab, the set-up cell, a cell after it]."""
    stub, log = fake_colab(folder)
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(f"import sys\nsys.path.insert(0, {str(stub)!r})\nimport google.colab"),
        nbformat.v4.new_code_cell(source),
        nbformat.v4.new_code_cell("import os\nprint('next cell ran in', os.getcwd())"),
    ])
    client = NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    error = None
    try:
        client.execute()
    except CellExecutionError as err:
        error = err
    calls = log.read_text().splitlines() if log.exists() else []
    return notebook, error, calls


def error_lines(cell) -> list[str]:
    [error] = [o for o in cell.outputs if o.output_type == "error"]
    return error["traceback"]


def test_the_placeholder_url_stops_run_all_before_drive_is_mounted(tmp_path):
    assert 'REPO_URL = "https://github.com/OWNER/REPO"' in setup_source()  # what is committed until publishing
    notebook, error, calls = run_in_colab(tmp_path, setup_source())
    assert error is not None and calls == []  # stopped, and nothing was mounted or turned on
    [line] = error_lines(notebook.cells[1])  # one line, no traceback
    assert line.startswith("Set-up stopped: REPO_URL is not set. Set REPO_URL at the top of this cell")
    assert "OWNER/REPO is what follows 'github/' in this page's address" in line
    assert notebook.cells[2].outputs == []  # Run all stopped there


def test_a_repository_that_does_not_answer_stops_run_all_with_gits_reason(tmp_path):
    missing = (tmp_path / "no-such-repo").as_uri()
    notebook, error, calls = run_in_colab(tmp_path, with_line(setup_source(), "REPO_URL", missing))
    assert error is not None and calls == []
    [line] = error_lines(notebook.cells[1])
    assert line.startswith(f"Set-up stopped: Reaching {missing} failed: fatal: ")
    assert line.endswith("Then Runtime > Run all again.")
    assert notebook.cells[2].outputs == []


def test_a_repository_that_answers_is_cloned_installed_and_drive_mounted_after(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the kernel's pip: offline, as every test is
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "requirements.txt").write_text("pip\n")  # already satisfied: pip installs nothing
    git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for command in (["init", "--quiet"], ["add", "requirements.txt"], ["commit", "--quiet", "-m", "x"]):
        subprocess.run(git + command, check=True)
    checkout = tmp_path / "content" / "ddrm-demo"
    source = with_line(with_line(setup_source(), "REPO_URL", origin.as_uri()), "CHECKOUT", str(checkout))
    notebook, error, calls = run_in_colab(tmp_path, source)
    assert error is None
    assert (checkout / "requirements.txt").exists()
    assert calls == ["widgets", "mount /content/drive"]
    assert "checkpoints go to /content/drive/MyDrive/ddrm-checkpoints" in notebook.cells[1].outputs[0]["text"]
    assert f"next cell ran in {checkout}" in notebook.cells[2].outputs[0]["text"]


def test_outside_colab_the_cell_only_imports_the_package(tmp_path):
    """No google.colab: no clone, no install, no mount, whatever REPO_URL says."""
    source = with_line(setup_source(), "CHECKOUT", str(tmp_path / "never"))
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ddrm_helpers ") and not (tmp_path / "never").exists()
