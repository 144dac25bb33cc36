"""The serve face (``enrichctl serve``): ``server`` (routes, handlers, the app), ``params``
(what it accepts), ``hosts`` (the Host allow-list), ``connections`` (cap and idle deadline),
``cache`` (shared builds), ``page`` and ``static/`` (the HTML dashboard), ``openapi``.

Deliberately empty: ``service`` and ``seriesbars`` import ``web.params``, which must not pull
in the server and aiohttp.web with it.
"""
