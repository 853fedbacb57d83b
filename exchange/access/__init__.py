"""Who may do what: API credentials (:mod:`exchange.access.credentials`), journaled core state
like any other module, so every node of a cluster and every replay of the journal agrees on them.

It depends only on :mod:`exchange.core`; the server, the route modules and the composition root
(:mod:`exchange.app`) import it.
"""
