"""The composition root: the one package that knows every other one.

It builds the full state machine (:mod:`.engine`: the core plus the rules, compliance, registry
and credentials modules), reads the settings (:mod:`.config`), lays out the market from them
(:mod:`.market`), wires the server, the journal and the dashboard into one aiohttp application
(:mod:`.server`), and holds the command-line entry points that do that composing (``*_cli``).

Nothing below it imports it (``tests/test_import_graph.py`` checks): the core, journal, rules,
compliance, registry, access, server and dashboard packages are given what they need.
"""
