"""The credit registry: serials for every credit unit, removals with a buffer pool,
carbon-inclusive credits issued from platforms' batches (see :mod:`exchange.registry.module`)."""
