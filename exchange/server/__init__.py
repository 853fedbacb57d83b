"""The served exchange: websocket gateway for firms, operator HTTP API, health and metrics.

Modules
-------
``gateway``      ``Session`` and ``Gateway`` (sessions, authentication, heartbeat, journal
                 batches), the ``/ws`` handler, the C gate's entry points
``framing``      websocket frames out and in (aiohttp's parser straight to the session)
``admission``    per-key rate limits, ``OVERLOADED``, ``SHUTTING_DOWN``
``idempotency``  retries of place_order by client order id
``fanout``       subscriptions, pushes of durable events, the send-queue bound
``handlers``     the built-in websocket methods and order entry
``protocol``     envelopes, parameter models, wire encoders, the websocket **method table**
``order_model``  the one model of order-entry params (the parser's and the C gate's)
``api``          the operator HTTP **route registry**, built-in routes, the OpenAPI document
``appkeys``      the app keys route modules of other packages read (``STATE_KEY``, ...)
``memory``       a non-durable runner with the CoreRunner interface (tests, benchmarks)

The application itself - the journal, the runner, genesis, ``/ws``, ``/api/v1``,
``/healthz``, ``/readyz``, ``/metrics``, the dashboard - is put together by the composition
root, :func:`exchange.app.server.create_app`; ``python -m exchange serve`` is
:mod:`exchange.app.serve_cli`, the gateway benchmark :mod:`exchange.app.bench`, and the API
credentials are :mod:`exchange.access.credentials`.

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
