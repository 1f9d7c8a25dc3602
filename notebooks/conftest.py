"""The notebooks run in kernels started by nbval; they cache bars in a fresh temporary directory
(set before any kernel starts, removed at exit), never in the user's bar cache, so a cache filled
by an older sandbox cannot change their outputs."""

import atexit
import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="alpaca-nb-notebooks-cache-")
os.environ["ALPACA_NB_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
