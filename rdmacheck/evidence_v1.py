"""``python3 -m rdmacheck.evidence_v1 FILE...``: the schema-1 converter's published command line.

The converter lives in :mod:`rdmacheck.evidence.v1`; this name stays because messages, docs and users'
scripts run it.
"""

import sys

from rdmacheck.evidence.v1 import main

if __name__ == "__main__":
    sys.exit(main())
