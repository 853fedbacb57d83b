"""The keys under which the composition root (:mod:`exchange.app.server`) puts shared objects on
the aiohttp application, for route modules of other packages (dashboard, rules, registry) to read
without importing the module that builds the app."""

from __future__ import annotations

from aiohttp import web

STATE_KEY = web.AppKey("state", object)  # app[STATE_KEY] -> exchange.app.server.ServerState
# app[NEW_CORE_KEY]() -> a fresh core of the server's kind (exchange.app.engine.build_exchange),
# for reading the journal back into a scratch copy
NEW_CORE_KEY = web.AppKey("new_core", object)
# app[NODE_KEY] -> exchange.server.node.NodeStatus: this node's name, role and journal
NODE_KEY = web.AppKey("node", object)
