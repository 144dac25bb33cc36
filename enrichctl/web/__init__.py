"""The serve face (``enrichctl serve``): ``server`` (routes, handlers, the app), ``params``
(what it accepts), ``hosts`` (the Host allow-list), ``connections`` (cap and idle deadline),
``cache`` (shared builds), ``page`` and ``static/`` (the HTML dashboard), ``openapi``, ``prom``
(``/metrics``, also written by ``textfile``), ``seriesbars`` (the chart's bars query).

Deliberately empty: ``textfile`` imports ``web.prom`` and ``seriesbars`` imports ``web.params``;
neither may pull in the server and aiohttp.web with it.
"""
