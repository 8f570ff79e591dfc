"""What an index records never widens what msearch reads: only this run's
own ``-L`` lets it follow symbolic links. A ``meta.json`` that records
"follow links" (an index that arrived with a repository, say) is a default
for options, never a permission: ``query --refresh``, ``watch``, ``status``,
MCP ``reindex`` and ``get`` stay inside the folder unless their command
line says ``-L``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clihelp import cli
from conftest import FakeEmbedder, current_models, write
from msearch import api
from msearch.errors import UsageError
from msearch.service import SearchService

SECRET = "The vault combination is swordfish lighthouse."


@pytest.fixture
def planted(tmp_path: Path, use_fake: FakeEmbedder) -> Path:
    """A folder indexed without -L whose meta.json was then edited to record
    follow_symlinks, and which holds a link to a file outside it."""
    root = tmp_path / "notes"
    write(root, "moon.md", "# Moon\n\nThe moon has phases: new, crescent, full.\n")
    r = cli("index", str(root))
    assert r.code == 0, r.stderr
    meta_path = root / ".msearch" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["walk"]["follow_symlinks"] = True
    meta_path.write_text(json.dumps(meta))
    outside = tmp_path / "outside" / "secret.txt"
    write(outside.parent, outside.name, SECRET + "\n")
    (root / "vault.txt").symlink_to(outside)
    return root


def indexed_paths(index_dir: Path) -> list[str]:
    return list(json.loads((index_dir / "meta.json").read_text())["files"]["path"])


def test_a_recorded_follow_setting_does_not_make_query_refresh_read_a_linked_outside_file(
    planted: Path,
) -> None:
    r = cli(
        "query", "vault combination", "--index", str(planted / ".msearch"), "--refresh", "--json"
    )
    assert r.code in (0, 1), r.stderr
    assert b"swordfish" not in r.stdout
    assert "vault.txt" not in indexed_paths(planted / ".msearch")
    assert "not following symbolic links" in r.stderr
    assert "Traceback" not in r.stderr


def test_this_runs_own_L_still_follows_links(planted: Path) -> None:
    r = cli("query", "vault combination", "--index", str(planted / ".msearch"), "--refresh", "-L")
    assert r.code == 0, r.stderr
    assert "vault.txt" in indexed_paths(planted / ".msearch")
    r = cli("query", "vault combination", "--index", str(planted / ".msearch"), "-L", "--json")
    assert b"swordfish" in r.stdout
    # Without -L the same index's hit in the linked file is stale: not read.
    r = cli("query", "vault combination", "--index", str(planted / ".msearch"), "--json")
    hits = [json.loads(x) for x in r.stdout.splitlines()]
    assert b"swordfish" not in r.stdout
    assert any(h["path"].endswith("vault.txt") and h.get("stale") for h in hits)


def test_status_does_not_walk_through_links_by_the_index_s_say(planted: Path) -> None:
    r = cli("status", "--index", str(planted / ".msearch"), "--json")
    assert r.code == 0, r.stderr
    assert "vault.txt" not in json.loads(r.stdout)["added"]
    r = cli("status", "--index", str(planted / ".msearch"), "--json", "-L")
    assert "vault.txt" in json.loads(r.stdout)["added"]


def test_updater_follows_only_what_it_is_given(planted: Path) -> None:
    said: list[str] = []
    updater = api.Updater(
        None, api.Overrides(), index_dir=planted / ".msearch", models=current_models()
    )
    updater.notice = said.append
    updater.run()
    assert "vault.txt" not in indexed_paths(planted / ".msearch")
    assert len([s for s in said if "not following" in s]) == 1
    # A folder update (watch: only the options given) is the same.
    updater = api.Updater(planted, api.Overrides(), models=current_models())
    assert updater.walk.follow_symlinks is False
    updater = api.Updater(
        planted, api.Overrides(walk={"follow_symlinks": True}), models=current_models()
    )
    assert updater.walk.follow_symlinks is True


def served(root: Path, follow: bool) -> SearchService:
    return SearchService(root / ".msearch", models=current_models(), follow_links=follow)


def test_mcp_reindex_and_get_stay_inside_the_root_without_L(planted: Path) -> None:
    service = served(planted, follow=False)
    stats: Any = service.reindex()
    assert "vault.txt" not in indexed_paths(planted / ".msearch")
    assert stats.files == 1
    # Even where the file table names the link (indexed with -L elsewhere),
    # get refuses to read through it.
    assert cli("index", str(planted), "-L").code == 0
    assert "vault.txt" in indexed_paths(planted / ".msearch")
    service = served(planted, follow=False)
    with pytest.raises(UsageError, match="symbolic link"):
        service.get("vault.txt")
    assert all("swordfish" not in h.text for h in service.search("vault combination"))
    # A server started with -L may.
    assert "swordfish" in served(planted, follow=True).get("vault.txt").text


def test_mcp_command_line_has_L(planted: Path) -> None:
    r = cli("mcp", "--help")
    assert "--follow" in r.text and "-L" in r.text
