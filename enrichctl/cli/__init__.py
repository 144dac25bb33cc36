"""The terminal face: ``entry`` (the console script), ``app`` (the typer commands), ``render``
(rich tables of the documents ``--json`` prints). Empty on purpose: ``enrichctl --version``
imports ``cli.entry`` and must not pull in typer."""
