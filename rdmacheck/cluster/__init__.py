"""Fleet acceptance through Ray (``rdmacheck cluster``).

``schedule``  pairwise rounds (circle method), pure.
``matrix``    the pairwise bandwidth matrix: judgement, CSV and an SVG heatmap, pure.
``remote``    what runs on the Ray nodes: the preflight task and the bench actor
              (it calls ``rdmacheck.bench.runner`` exactly like torchrun would).
``driver``    discovery, pinning, bounded waits, evidence files and the report.

Nothing here imports ray or torch at module level.
"""
