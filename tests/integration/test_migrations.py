"""Migrations and models agree: after `broker db upgrade`, autogenerate finds nothing to do."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, inspect

from broker.db import Base
from broker.migrations import alembic_config


def schema_differences(stack, metadata: MetaData = Base.metadata) -> list:
    with stack.runtime.db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                         "compare_server_default": True})
        return compare_metadata(context, metadata)


def test_upgraded_database_is_at_the_head_revision(db_stack):
    head = ScriptDirectory.from_config(alembic_config(db_stack.settings.database_url)).get_current_head()
    with db_stack.runtime.db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head


def test_every_model_table_exists_after_upgrade(db_stack):
    tables = set(inspect(db_stack.runtime.db.engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables


def test_autogenerate_finds_no_difference_between_models_and_migrations(db_stack):
    differences = schema_differences(db_stack)
    assert differences == [], "\n".join(map(repr, differences))


def test_the_comparison_notices_a_model_change_missing_from_the_migrations(db_stack):
    drifted = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["orders"].append_column(Column("loyalty_points", Integer))
    differences = schema_differences(db_stack, drifted)
    assert [(d[0], d[2], d[3].name) for d in differences] == [
        ("add_column", "orders", "loyalty_points")]
