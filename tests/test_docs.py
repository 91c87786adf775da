"""The documentation: a README a newcomer reads in one sitting, whose links into docs/ land, and a MkDocs site that
builds with `mkdocs build --strict` (a broken link, a page missing from the nav or a bad anchor fails it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_LINES = 300


def test_the_readme_stays_short_and_its_links_into_docs_land():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < README_LINES, "move a section into docs/ and link it"
    links = re.findall(r"\]\((docs/[^)#]+)(?:#([^)]+))?\)", readme)
    assert links, "the README links its docs pages"
    for page, anchor in links:
        assert (ROOT / page).is_file(), page
        if anchor:
            headings = re.findall(r"(?m)^#+ (.+)$", (ROOT / page).read_text())
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, (page, anchor, sorted(slugs))


def test_the_site_builds_strictly_with_every_page_in_the_nav(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    done = subprocess.run(build, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    import yaml

    nav = {page for entry in yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"] for page in entry.values()}
    assert nav == {p.name for p in (ROOT / "docs").glob("*.md")}, "every page of docs/ in mkdocs.yml's nav, once"
    assert (tmp_path / "site" / "serving" / "index.html").is_file()
