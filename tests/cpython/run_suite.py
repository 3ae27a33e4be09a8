"""Runs CPython's own sqlite3 test suite (Lib/test/test_sqlite3 of the host's Python release)
and writes what happened as JSON, for tests/cpython_sqlite3.rs.

    python3 run_suite.py SUITE_PARENT OUT.json

SUITE_PARENT holds `test_sqlite3/`; it is put in front of the stdlib `test` package's path,
so `test.support` is the host's own (Debian's libpython3.X-testsuite). With
WARDEN_CPYTHON_EXT set, sitecustomize.py has loaded the extension before this runs.
"""
import json
import os
import sqlite3
import sys
import unittest

suite_parent, out = sys.argv[1], sys.argv[2]

import test  # noqa: E402  (the stdlib's test package)

test.__path__.insert(0, suite_parent)
import test.test_sqlite3 as pkg  # noqa: E402

assert pkg.__file__.startswith(suite_parent), f"imported the wrong suite: {pkg.__file__}"
here = os.path.dirname(pkg.__file__)
modules = sorted(f[:-3] for f in os.listdir(here) if f.startswith("test_") and f.endswith(".py"))
loader = unittest.defaultTestLoader
suite = unittest.TestSuite(loader.loadTestsFromName(f"test.test_sqlite3.{m}") for m in modules)

with open(os.devnull, "w") as sink:
    result = unittest.TextTestRunner(stream=sink, verbosity=0).run(suite)

# The guard's own answers: the extension's mode (from the connection that loaded it), and
# what a plain connect() of a file gets (`PRAGMA warden_status` exists only through the guard).
guard = vfs = None
if os.environ.get("WARDEN_CPYTHON_EXT"):
    import sitecustomize

    guard = json.loads(sitecustomize._warden_first.execute("SELECT warden_version()").fetchone()[0])
    probe = sqlite3.connect("warden-probe.db")
    try:
        vfs = json.loads(probe.execute("PRAGMA warden_status").fetchone()[0])
    except sqlite3.DatabaseError as e:
        vfs = {"error": str(e)}
    probe.close()

failed = result.failures + result.errors + [(t, "unexpected success") for t in result.unexpectedSuccesses]
json.dump(
    {
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "modules": modules,
        "run": result.testsRun,
        "failed": {t.id(): tb for t, tb in failed},
        "skipped": {t.id(): why for t, why in result.skipped},
        "guard": guard,
        "default_vfs_status": vfs,
    },
    open(out, "w"),
    indent=1,
)
