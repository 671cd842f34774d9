"""Set the repository's public URL where the project names it: ``REPO_URL`` in the notebook's set-up
cell (what Colab clones) and the "Open in Colab" link in the README (which notebook Colab opens).

Run it once when publishing, or in a fork, then commit both files:

    python tools/set_repo_url.py https://github.com/OWNER/REPO [--branch main]

Colab opens notebooks from GitHub only, so the URL must be a GitHub repository's.
``tests/test_docs.py`` checks that the two places agree.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "ddrm_demo.ipynb"
README = "README.md"

# In the notebook's JSON: the source line `REPO_URL = "..."` (its quotes escaped as \").
NOTEBOOK_LINE = re.compile(r'(REPO_URL = \\")([^"\\]*)(\\")')
# In the README: every link that opens the notebook in Colab.
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/([^/\s)]+)/([^/\s)]+)/blob/([^/\s)]+)/"
                        + re.escape(NOTEBOOK))
GITHUB_URL = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")


def parse_github_url(url: str) -> tuple[str, str]:
    """``(owner, repo)`` of ``https://github.com/OWNER/REPO`` (a trailing ``.git`` or ``/`` is allowed)."""
    match = GITHUB_URL.match(url.strip())
    if not match:
        raise ValueError(f"{url!r} is not a GitHub repository's URL (https://github.com/OWNER/REPO): "
                         "Colab opens notebooks from GitHub only")
    return match.group(1), match.group(2)


def notebook_repo_url(root: Path = ROOT) -> str:
    """The ``REPO_URL`` written in the notebook."""
    matches = NOTEBOOK_LINE.findall((root / NOTEBOOK).read_text(encoding="utf-8"))
    if len(matches) != 1:
        raise ValueError(f"expected one REPO_URL line in {NOTEBOOK}, found {len(matches)}")
    return matches[0][1]


def readme_colab_links(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """``(owner, repo, branch)`` of every Colab link in the README."""
    return COLAB_LINK.findall((root / README).read_text(encoding="utf-8"))


def set_repo_url(url: str, branch: str = "main", root: Path = ROOT) -> str:
    """Write ``url`` into the notebook and the README's Colab links; returns the URL written."""
    owner, repo = parse_github_url(url)
    url = f"https://github.com/{owner}/{repo}"
    notebook, readme = root / NOTEBOOK, root / README
    text = notebook.read_text(encoding="utf-8")
    text, count = NOTEBOOK_LINE.subn(lambda m: f"{m.group(1)}{url}{m.group(3)}", text)
    if count != 1:
        raise ValueError(f"expected one REPO_URL line in {notebook}, found {count}")
    readme_text, links = COLAB_LINK.subn(
        f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/{NOTEBOOK}",
        readme.read_text(encoding="utf-8"))
    if links == 0:
        raise ValueError(f"no Colab link to {NOTEBOOK} in {readme}")
    notebook.write_text(text, encoding="utf-8")
    readme.write_text(readme_text, encoding="utf-8")
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="https://github.com/OWNER/REPO")
    parser.add_argument("--branch", default="main", help="the branch Colab opens the notebook from (default main)")
    args = parser.parse_args(argv)
    try:
        url = set_repo_url(args.url, args.branch)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"REPO_URL in {NOTEBOOK} and the Colab link in {README} now point to {url}; commit both files.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
