"""The served exchange: websocket gateway for firms, operator HTTP API, health and metrics.

Modules
-------
``app``          ``create_app(settings, data_dir)``: the aiohttp application — SQLite journal +
                 CoreRunner, genesis on the first start, ``/ws``, ``/api/v1``, ``/healthz``,
                 ``/readyz``, ``/metrics``
``cli``          ``python -m exchange serve``
``gateway``      sessions, built-in websocket methods, subscriptions, fan-out, idempotency
``protocol``     envelopes, parameter models, wire encoders, the websocket **method table**
``api``          the operator HTTP **route registry**, built-in routes, the OpenAPI document
``credentials``  API keys as journaled commands storing SHA-256 hashes (a core Module)
``memory``       a non-durable runner with the CoreRunner interface (tests, benchmarks)
``bench``        gateway micro-benchmark

Extending (rules, compliance, dashboard, ...)
---------------------------------------------
Put the endpoints of package ``exchange/<pkg>`` in ``exchange/<pkg>/api.py``; the server imports
every such module at start (:func:`exchange.server.api.load_extensions`). In it:

* HTTP: ``@route("POST", "/<pkg>/thing", body=Model, response=Model, roles=("operator",),
  tag="<pkg>", summary="...")`` on ``async def handler(ctx: ApiContext, body) -> dict``;
  ``await ctx.command(cmd)`` journals a command and raises its reject as an error reply. See
  :mod:`exchange.server.api`.
* Websocket: ``@ws_method("name", ParamsModel, roles=("firm",))`` on
  ``handler(session, params) -> dict | awaitable``; ``session.firm_id``, ``session.role``,
  ``await session.gateway.submit_checked(cmd)``. See :mod:`exchange.server.protocol`.
* Error codes: add them to ``exchange/core/errors.py`` in the package's own block.

docs/PROTOCOL.md is the reference for clients; docs/adr/0003-gateway.md the design.
"""
