"""Every documentation link and every ``docs/...`` or ``*.md`` path the project mentions resolves inside it.

Why: the design notes the project started from live outside the repository, and pointers to them (or to
files that were moved or renamed) rot silently. This test reads the markdown pages (README.md, docs/,
deploy/README.md) and the docstrings and comments of ``zsad_core`` and ``services`` and fails on any link or
path that names no file of the repository, or one outside it. Web links are refused unless listed in
:data:`ALLOWED_EXTERNAL`: the documentation is meant to stand on its own.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MARKDOWN_FILES = sorted([ROOT / "README.md", ROOT / "deploy" / "README.md", *(ROOT / "docs").glob("*.md")])
PYTHON_FILES = sorted([*(ROOT / "zsad_core").rglob("*.py"), *(ROOT / "services").rglob("*.py")])
# Web links the documentation may keep (upstream projects where a pointer is essential). None so far.
ALLOWED_EXTERNAL: frozenset[str] = frozenset()

# [text](target) or ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# A docs/ path or a file name ending in .md, not part of a longer path or a URL.
MENTION = re.compile(r"(?<![\w/.:-])((?:\.\./)*(?:docs/[\w./-]*[\w/]|[\w./-]*\w\.md\b))")
# The design notes outside the repository, also when named without a path or extension.
OUTSIDE_NOTES = re.compile(r"PLATFORM-NOTES|shared/design/")
FENCE = re.compile(r"^(```|~~~)")


def heading_anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the headings of a markdown text (fenced code blocks skipped)."""
    anchors: set[str] = set()
    in_fence = False
    for line in markdown.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (match := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            text = re.sub(r"[^\w\- ]", "", match.group(1).lower().replace("`", ""))
            anchors.add(text.replace(" ", "-"))
    return anchors


def resolve_inside(target: str, base: Path, root: Path) -> Path | None:
    """The file ``target`` names, relative to ``base`` or else to ``root``, if it exists inside ``root``."""
    if target.startswith("/"):
        return None
    for start in (base, root):
        candidate = (start / target).resolve()
        if candidate.is_relative_to(root.resolve()) and candidate.exists():
            return candidate
    return None


def link_problems(markdown: str, source: Path, root: Path) -> list[str]:
    """Why each markdown link of ``markdown`` (a page at ``source``) does not resolve inside ``root``."""
    problems = []
    for target in LINK.findall(markdown):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # a scheme: http, https, mailto, file ...
            if target not in ALLOWED_EXTERNAL:
                problems.append(f"external link {target} (add it to ALLOWED_EXTERNAL if it is essential)")
            continue
        path_part, _, anchor = target.partition("#")
        page = source if not path_part else resolve_inside(path_part, source.parent, root)
        if page is None:
            problems.append(f"link {target} resolves to no file inside the repository")
        elif anchor and page.suffix == ".md" and anchor not in heading_anchors(page.read_text(encoding="utf-8")):
            problems.append(f"link {target}: no heading #{anchor} in {page.relative_to(root.resolve())}")
    return problems


def mention_problems(text: str, source: Path, root: Path) -> list[str]:
    """Why each ``docs/...`` or ``*.md`` path mentioned in ``text`` does not resolve inside ``root``."""
    problems = [
        f"{path} is mentioned but is no file inside the repository"
        for path in MENTION.findall(text)
        if resolve_inside(path, source.parent, root) is None
    ]
    notes = OUTSIDE_NOTES.findall(text)
    return problems + [f"{note} points to the design notes outside the repository" for note in notes]


def docstrings_and_comments(source: str) -> str:
    """The string literals and comments of a Python module, one per line (docstrings are string literals)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return "\n".join(token.string for token in tokens if token.type in (tokenize.STRING, tokenize.COMMENT))


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", MARKDOWN_FILES, ids=_name)
def test_markdown_links_and_paths_resolve(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert link_problems(text, page, ROOT) + mention_problems(text, page, ROOT) == []


@pytest.mark.parametrize("module", PYTHON_FILES, ids=_name)
def test_python_docstrings_and_comments_point_inside(module: Path) -> None:
    text = docstrings_and_comments(module.read_text(encoding="utf-8"))
    assert mention_problems(text, module, ROOT) == []


def test_the_pages_exist_and_are_indexed() -> None:
    """docs/README.md links every page of docs/, and the top-level README links docs/."""
    pages = {page.name for page in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages == {"methods.md", "architecture.md", "operations.md", "gateway.md", "testing.md", "config.md",
                     "first-camera.md"}
    index = set(LINK.findall((ROOT / "docs" / "README.md").read_text(encoding="utf-8")))
    assert pages <= index
    assert "docs/README.md" in LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


# -- the checker itself, on a scratch repository ---------------------------------------------------------------
def _scratch(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "guide.md").write_text("# Start here\n\n## The `zsad up` command\n\n```\n# not a heading\n```\n")
    (tmp_path / "outside.md").write_text("# outside\n")
    return root


def test_checker_accepts_links_and_mentions_that_resolve(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    page = root / "README.md"
    text = "[guide](docs/guide.md#start-here), [cmd](docs/guide.md#the-zsad-up-command), see docs/guide.md"
    assert link_problems(text, page, root) == []
    assert mention_problems(text, page, root) == []
    assert mention_problems("(guide.md, from the page's own directory)", root / "docs" / "guide.md", root) == []


def test_checker_reports_every_kind_of_bad_pointer(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    page = root / "README.md"
    links = (
        "[a](docs/missing.md) [b](../outside.md) [c](/etc/hosts) [d](https://example.org/x) "
        "[e](docs/guide.md#no-such-heading) [f](docs/guide.md#not-a-heading)"
    )
    problems = link_problems(links, page, root)
    assert len(problems) == 6, problems
    assert [p.split()[0] for p in problems] == ["link", "link", "link", "external", "link", "link"]
    mentions = "see METHODS.md section 1, ../outside.md, docs/gone/, PLATFORM-NOTES and docs/guide.md"
    found = mention_problems(mentions, page, root)
    assert [p.split()[0] for p in found] == ["METHODS.md", "../outside.md", "docs/gone/", "PLATFORM-NOTES"]
    (root / "shared" / "design").mkdir(parents=True)
    (root / "shared" / "design" / "STYLE.md").write_text("# a copy inside is still the outside notes\n")
    assert [p.split()[0] for p in mention_problems("shared/design/STYLE.md", page, root)] == ["shared/design/"]


def test_only_strings_and_comments_of_python_are_read() -> None:
    source = 'import x  # see docs/a.md\nVALUE = "docs/b.md"\nname_md = 1\n\n\ndef f():\n    """Read docs/c.md."""\n'
    assert MENTION.findall(docstrings_and_comments(source)) == ["docs/a.md", "docs/b.md", "docs/c.md"]
