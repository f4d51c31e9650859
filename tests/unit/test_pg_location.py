"""Where the local Postgres cluster lives and who runs it (services.pg_location), on real directories."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import FeatureCtlError
from core.settings import Settings
from services.pg_location import first_untraversable, plan_cluster
from stack.postgres import Postgres


def test_root_gets_a_cluster_outside_the_data_directory_linked_from_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "home" / "clone" / ".stack"
    plan = plan_cluster(data_dir, Path("/var/lib/featurectl/postgres"), euid=0, new_id="abc")
    assert plan.home == Path("/var/lib/featurectl/postgres/abc")
    assert plan.os_user == "postgres"
    assert plan.link == data_dir / "postgres"


def test_two_data_directories_get_two_clusters(tmp_path: Path) -> None:
    clusters = tmp_path / "clusters"
    a = plan_cluster(tmp_path / "a", clusters, euid=0)
    b = plan_cluster(tmp_path / "b", clusters, euid=0)
    assert a.home != b.home
    assert a.home.parent == b.home.parent == clusters


def test_an_existing_link_is_followed_by_every_later_command(tmp_path: Path) -> None:
    home = tmp_path / "clusters" / "c1"
    home.mkdir(parents=True)
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "postgres").symlink_to(home)
    plan = plan_cluster(data_dir, tmp_path / "elsewhere", euid=0)
    assert plan.home == home.resolve()
    assert plan.link == data_dir / "postgres"


def test_a_cluster_made_in_place_by_an_earlier_version_stays(tmp_path: Path) -> None:
    (tmp_path / "postgres" / "data").mkdir(parents=True)
    (tmp_path / "postgres" / "data" / "PG_VERSION").write_text("15\n")
    plan = plan_cluster(tmp_path, tmp_path / "clusters", euid=0)
    assert plan.home == (tmp_path / "postgres").resolve()
    assert plan.link is None
    assert plan.os_user == "postgres"


def test_a_leftover_directory_without_a_cluster_is_replaced_by_a_link_as_root(tmp_path: Path) -> None:
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "postgres.log").write_text("initdb failed\n")
    plan = plan_cluster(tmp_path, tmp_path / "clusters", euid=0, new_id="x")
    assert plan.home == tmp_path / "clusters" / "x"
    assert plan.link == tmp_path / "postgres"


def test_other_users_run_postgres_themselves_in_the_data_directory(tmp_path: Path) -> None:
    plan = plan_cluster(tmp_path / "d", tmp_path / "clusters", euid=1000)
    assert plan.home == tmp_path / "d" / "postgres"
    assert plan.os_user is None
    assert plan.link is None


def test_first_untraversable_names_the_blocking_ancestor(tmp_path: Path) -> None:
    private = tmp_path / "private"
    target = private / "clone" / ".stack"
    target.mkdir(parents=True)
    assert first_untraversable(target, lambda d: d != private) == private
    assert first_untraversable(target, lambda d: True) is None


# The root/postgres split exists only for root. CI runs as root: there these tests always run (a CI
# without root fails them loudly instead of skipping), elsewhere a non-root developer skips them.
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="the root/postgres split exists only for root"
)


def _postgres_user() -> bool:
    return subprocess.run(["id", "postgres"], capture_output=True).returncode == 0


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A 0755 directory the postgres user can reach (pytest's tmp_path sits under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="featurectl-pgloc-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_as_root_the_cluster_home_is_made_reachable_for_postgres_without_touching_the_users_dirs(
    tmp_path: Path, open_dir: Path
) -> None:
    if not _postgres_user():
        pytest.fail("the postgres OS user is missing: `featurectl stack install` creates it")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    data_dir = private / "clone" / ".stack"
    clusters = open_dir / "made" / "clusters"
    pg = Postgres(Settings(data_dir=data_dir, pg_clusters_dir=clusters))
    old = os.umask(0o077)  # parents made under a strict umask must still be traversable
    try:
        pg.prepare_home()
    finally:
        os.umask(old)
    assert (private.stat().st_mode & 0o777) == 0o700
    assert (data_dir / "postgres").is_symlink()
    assert pg.home.parent == clusters
    assert pg.home.stat().st_uid == int(subprocess.check_output(["id", "-u", "postgres"]))
    assert subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(pg.home)]).returncode == 0
    # A second object (a later command) finds the same cluster through the link.
    assert Postgres(Settings(data_dir=data_dir, pg_clusters_dir=clusters)).home == pg.home
    home = pg.home
    pg.wipe()
    assert not home.exists()
    assert not (data_dir / "postgres").exists()


@needs_root
def test_as_root_an_unreachable_clusters_dir_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    if not _postgres_user():
        pytest.fail("the postgres OS user is missing: `featurectl stack install` creates it")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    data_dir = tmp_path / "d"
    pg = Postgres(Settings(data_dir=data_dir, pg_clusters_dir=private / "clusters"))
    with pytest.raises(FeatureCtlError) as err:
        pg.prepare_home()
    assert str(private) in str(err.value) and "FEATURECTL_PG_CLUSTERS_DIR" in str(err.value)
    assert not (private / "clusters").exists()
    assert not (data_dir / "postgres").exists()


@needs_root
def test_a_copied_data_directory_does_not_share_the_originals_cluster(tmp_path: Path, open_dir: Path) -> None:
    if not _postgres_user():
        pytest.fail("the postgres OS user is missing: `featurectl stack install` creates it")
    clusters = open_dir / "clusters"
    original = Postgres(Settings(data_dir=tmp_path / "a", pg_clusters_dir=clusters))
    original.prepare_home()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "postgres").symlink_to(original.home)  # what `cp -a a b` leaves
    copy = Postgres(Settings(data_dir=tmp_path / "b", pg_clusters_dir=clusters))
    with pytest.raises(FeatureCtlError) as err:
        copy.prepare_home()
    assert str(tmp_path / "a") in str(err.value) and "remove the link" in str(err.value)
    copy.wipe()  # unlinks only: the original keeps its cluster
    assert original.home.exists()
    original.wipe()
    assert not original.home.exists()
