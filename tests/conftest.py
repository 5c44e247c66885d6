"""Shared test settings: small thread pools so the suite behaves on 2-core CI machines."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
