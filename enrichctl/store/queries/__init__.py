"""Every SQL statement the store runs, named, one module per family of tables; only the
store's bases (``store/core.py`` and the mixins beside it) execute them.

Statements are SQLAlchemy Core, portable between SQLite and PostgreSQL; the upserts that need
``ON CONFLICT`` pick the dialect's insert construct (``upserts.py``); ``driver.py`` holds the
plain SQL text of the paths that go straight to the driver.
"""
