"""Retention settings: documented defaults, 0/empty keeps for ever, bad values name the
variable, and the beat schedules the purge at the configured interval."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.queue import celery_config
from broker.services.retention import Policy
from broker.settings import ConfigError, load_settings


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"BROKER_DATA_DIR": str(tmp_path), **{f"BROKER_{k}": v for k, v in values.items()}}


def test_defaults_keep_each_class_for_its_documented_window(tmp_path):
    policy = Policy.from_settings(load_settings(env(tmp_path)))
    assert policy.days == {"events": 90, "versions": 365, "attempts": 180, "timeline": 365,
                           "audit": 730}
    assert policy.batch == 500 and policy.archive_dir is None


def test_zero_or_empty_keeps_for_ever_and_archive_dir_expands(tmp_path):
    settings = load_settings(env(tmp_path, RETENTION_EVENTS_DAYS="0", RETENTION_AUDIT_DAYS="",
                                 RETENTION_ARCHIVE_DIR="{data_dir}/archive"))
    policy = Policy.from_settings(settings)
    assert policy.days["events"] == 0 and policy.days["audit"] == 0
    assert policy.archive_dir == tmp_path.resolve() / "archive"


@pytest.mark.parametrize(("name", "value"), [("RETENTION_EVENTS_DAYS", "-1"),
                                             ("RETENTION_TIMELINE_DAYS", "a year"),
                                             ("RETENTION_BATCH", "0")])
def test_a_bad_retention_value_names_the_variable(tmp_path, name, value):
    with pytest.raises(ConfigError, match=f"BROKER_{name}="):
        load_settings(env(tmp_path, **{name: value}))


def test_the_beat_runs_the_purge_every_retention_interval(tmp_path):
    settings = load_settings(env(tmp_path, RETENTION_INTERVAL="600"))
    entry = celery_config(settings)["beat_schedule"]["retention"]
    assert entry["task"] == "broker.retention" and entry["schedule"] == 600.0
