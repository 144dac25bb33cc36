"""The shortcut constant that lets an up-to-date database skip importing Alembic."""

from enrichctl.store import migrate


def test_head_constant_is_alembics_head():
    # If this fails, a migration was added without updating migrate.HEAD: databases would be
    # treated as up to date while they are not.
    assert migrate.HEAD == migrate.head_revision()
