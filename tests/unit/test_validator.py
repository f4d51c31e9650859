import json
import os
import shutil
from pathlib import Path

import pytest

from core.errors import ConfigError
from validation.suites import SUITES_DIR, SuiteStore
from validation.validator import BatchValidator

# A customer_profile row as the pipeline hands it on: the e-mail already hashed (pii.email = hash).
GOOD = {"customer_id": 1, "country": "GB", "segment": "gold", "credit_limit": 10.0, "email": "0" * 64}


@pytest.fixture(scope="module")
def validator() -> BatchValidator:
    return BatchValidator(SuiteStore(SUITES_DIR))


def test_shipped_suites_load() -> None:
    store = SuiteStore(SUITES_DIR)
    for view in ("customer_profile", "product_details", "order_status"):
        suite = store.get(view)
        assert suite.type_checks.expectations and suite.value_checks.expectations


def test_batch_is_split_by_row_with_the_failed_expectations(validator: BatchValidator) -> None:
    rows = [
        GOOD,
        {**GOOD, "customer_id": None},
        {**GOOD, "segment": "weird", "credit_limit": -1.0},
        {**GOOD, "credit_limit": "abc"},
        {**GOOD, "country": "gbr"},
        {**GOOD, "customer_id": 5, "credit_limit": 3},
    ]
    verdict = validator.validate("customer_profile", rows)
    assert verdict.valid == [0, 5]
    failed = {i: {(f.expectation, f.column) for f in fs} for i, fs in verdict.invalid.items()}
    assert failed[1] == {("expect_column_values_to_not_be_null", "customer_id")}
    assert failed[2] == {
        ("expect_column_values_to_be_in_set", "segment"),
        ("expect_column_values_to_be_between", "credit_limit"),
    }
    assert failed[3] == {("expect_column_values_to_be_in_type_list", "credit_limit")}
    assert failed[4] == {("expect_column_values_to_match_regex", "country")}
    assert verdict.invalid[2][0].as_dict()["value"] in ("weird", -1.0)
    assert json.dumps([f.as_dict() for fs in verdict.invalid.values() for f in fs])  # serialisable


def test_an_int_column_with_a_null_keeps_its_type(validator: BatchValidator) -> None:
    verdict = validator.validate(
        "order_status",
        [
            {
                "order_id": 1,
                "customer_id": 1,
                "product_id": 1,
                "quantity": 2,
                "amount": 5.0,
                "status": "placed",
            },
            {
                "order_id": 2,
                "customer_id": 1,
                "product_id": None,
                "quantity": 2,
                "amount": 5.0,
                "status": "placed",
            },
        ],
    )
    assert verdict.valid == [0]
    assert {f.column for f in verdict.invalid[1]} == {"product_id"}


def test_missing_suite_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no expectation suite for feature view 'nope'"):
        BatchValidator(SuiteStore(tmp_path)).validate("nope", [GOOD])


def test_a_fixed_suite_is_reloaded(tmp_path: Path) -> None:
    shutil.copy(SUITES_DIR / "customer_profile.json", tmp_path)
    validator = BatchValidator(SuiteStore(tmp_path))
    assert validator.validate("customer_profile", [{**GOOD, "segment": "vip"}]).valid == []
    path = tmp_path / "customer_profile.json"
    path.write_text(path.read_text().replace('"platinum"', '"platinum", "vip"'))
    later = path.stat().st_mtime + 5
    os.utime(path, (later, later))  # a distinct modification time, whatever the clock's resolution
    assert validator.validate("customer_profile", [{**GOOD, "segment": "vip"}]).valid == [0]


def test_broken_suite_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "v.json").write_text('{"name": "v", "expectations": [{"type": "expect_no_such_thing"}]}')
    with pytest.raises(ConfigError, match="is invalid"):
        SuiteStore(tmp_path).get("v")
