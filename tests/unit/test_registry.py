"""Plugins come from entry points; a broken one is skipped with a warning that names it."""

from __future__ import annotations

import logging

from broker.channels.base import Channel
from connectors.base import Connector
from connectors.registry import GROUP, load_plugins


def _install_fake_distribution(tmp_path, monkeypatch, entry_points: str) -> None:
    dist = tmp_path / "acme_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_builtin_kinds_are_registered_like_third_party_ones():
    assert "http" in load_plugins(GROUP, Connector)
    assert "standard-webhooks" in load_plugins("broker.channels", Channel)


def test_broken_plugins_are_skipped_with_a_warning_naming_them(tmp_path, monkeypatch, caplog):
    _install_fake_distribution(tmp_path, monkeypatch, (
        "[broker.connectors]\n"
        "acme-missing = acme_module_that_does_not_exist:Connector\n"
        "acme-mislabelled = connectors.http:HttpConnector\n"
        "acme-not-a-connector = json:JSONDecoder\n"))
    with caplog.at_level(logging.WARNING):
        kinds = load_plugins(GROUP, Connector)
    assert "http" in kinds
    assert not {"acme-missing", "acme-mislabelled", "acme-not-a-connector"} & set(kinds)
    for name in ("acme-missing", "acme-mislabelled", "acme-not-a-connector"):
        assert name in caplog.text
