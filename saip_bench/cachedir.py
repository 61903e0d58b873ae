"""Where saip-bench keeps what it can rebuild: the synthetic world, pretrained checkpoints, feature caches and
pool indexes.

Why the per-user cache folder (``platformdirs``) and not ``./.cache``: a cache relative to the current folder
gave every working folder its own copy of the world and of every pretraining, and scattered ``.cache`` folders
wherever a command was run. Every entry is keyed by its content (the world by generator version, preset and
seed; a checkpoint by method, backbone, resolved preset, pretraining code, seed and data fingerprint), so one
cache can be shared by every checkout and folder of one user. ``$SAIP_CACHE_DIR`` or ``--cache-dir`` moves it
(a scratch disk, a shared project folder).
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "saip-bench"
ENV_VAR = "SAIP_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$SAIP_CACHE_DIR`` when set, else the user cache folder (``~/.cache/saip-bench`` on Linux)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
