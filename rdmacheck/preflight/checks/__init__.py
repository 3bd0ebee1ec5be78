"""Gate functions: facts + expectations -> Results with stable ids.

Each ``gate_*`` function is pure (it reads only the NodeFacts record and the Config) and is listed, with its
ids and metadata, in the one registry, ``rdmacheck.preflight.registry.GATES``.
"""
