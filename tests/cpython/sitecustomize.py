# Loaded by every Python process of tests/cpython_sqlite3.rs (PYTHONPATH points here), the
# suite's own child processes included: when WARDEN_CPYTHON_EXT names libwarden, load it on a
# first connection that stays open for the life of the process. With WARDEN_DEFAULT_VFS=1 the
# extension makes `warden` the default VFS, so every later sqlite3.connect() of this process
# goes through the guard. (This shadows Debian's own sitecustomize, which only hooks apport.)
import os

_lib = os.environ.get("WARDEN_CPYTHON_EXT")
if _lib:
    import sqlite3

    _warden_first = sqlite3.connect(":memory:")
    _warden_first.enable_load_extension(True)
    _warden_first.load_extension(_lib)
    _warden_first.enable_load_extension(False)
