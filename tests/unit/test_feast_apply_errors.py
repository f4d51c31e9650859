"""`feast apply` failures name their real cause."""

import re
from pathlib import Path

import pytest

from core.errors import FeatureCtlError
from core.settings import PROJECT_ROOT
from stores.repository import copy_repo, feast_apply


def test_an_unreachable_online_store_is_named_not_the_declarations(tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    copy_repo(PROJECT_ROOT / "feature_repo", repo)
    yaml = repo / "feature_store.yaml"
    unreachable = (
        "online_store:\n  type: stores.postgres.feast.PgVectorOnlineStore\n  host: 127.0.0.1\n  port: 1\n"
        "  database: features\n  user: featurestore\n  password: x\n  sslmode: disable\n  vector_enabled: true\n"
    )
    yaml.write_text(re.sub(r"online_store:\n(?:[ #].*\n)+", unreachable, yaml.read_text()))
    with pytest.raises(FeatureCtlError) as err:
        feast_apply(repo)
    assert "start the online store" in str(err.value.fix)
    assert "fix the feature declarations" not in str(err.value.fix)
