#!/usr/bin/env python3
"""The example engine in Python: the same guard as the Rust engine, through warden's
loadable extension (libwarden.so), on apsw (SQLite 3.54.x; Python's own sqlite3 module
usually links an older SQLite, which warden refuses).

    warden run --db trades.db --create -- python3 examples/python_engine.py --trades 100

Under `warden run` it takes everything from the environment: the database (WARDEN_DB),
whether it may create it (WARDEN_CREATE=1), and the session's writer lock (WARDEN_LOCK_FD),
which the extension adopts when the engine opens its database through the `warden` VFS.
The extension is found at $WARDEN_EXTENSION, else ext/target/release/libwarden next to
this file's repository.

Output: one JSON object per line (`ready`, `busy`, `refused`, `done`), like the Rust example
engine. Exit codes: 0 done, 64 usage, 69 refused by the guard, 75 another writer holds the
database. SIGTERM/SIGINT/SIGHUP stop it early and cleanly.
"""

import argparse
import json
import os
import signal
import sys
import time

try:
    import apsw
except ImportError:
    sys.stderr.write("python_engine: needs apsw (python3 -m pip install apsw)\n")
    sys.exit(69)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_EXT = os.path.join(HERE, "..", "ext", "target", "release", "libwarden")


def say(**event):
    event["pid"] = os.getpid()
    print(json.dumps(event), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=os.environ.get("WARDEN_DB"))
    p.add_argument("--trades", type=int, default=10)
    p.add_argument("--hold-ms", type=int, default=0)
    p.add_argument("--create", action="store_true", default=os.environ.get("WARDEN_CREATE") == "1")
    a = p.parse_args()
    if not a.db:
        sys.stderr.write("python_engine: --db is required (or run it under `warden run`)\n")
        return 64

    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.append(True))

    loader = apsw.Connection(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(os.environ.get("WARDEN_EXTENSION", DEFAULT_EXT))

    flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if a.create else 0)
    try:
        conn = apsw.Connection(a.db, vfs="warden", flags=flags)
        conn.execute("PRAGMA journal_mode").fetchall()
    except apsw.Error as e:
        status = json.loads(loader.execute("SELECT warden_status(?)", (a.db,)).fetchone()[0])
        lock = status.get("writer_lock") or {}
        if lock.get("state") == "held":
            say(event="busy", holder=(lock.get("record") or {}).get("holder"), error=str(e))
            return 75
        say(event="refused", error=str(e), storage=status.get("fs"))
        return 69
    if json.loads(loader.execute("SELECT warden_status(?)", (a.db,)).fetchone()[0]).get("wal_allowed"):
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON")
    conn.execute(
        """CREATE TABLE IF NOT EXISTS trades(
               id INTEGER PRIMARY KEY, ts TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')),
               symbol TEXT NOT NULL, qty INTEGER NOT NULL CHECK (qty > 0), price REAL NOT NULL);
           CREATE TABLE IF NOT EXISTS ledger(id INTEGER PRIMARY KEY CHECK (id = 1), trades INTEGER NOT NULL);
           INSERT OR IGNORE INTO ledger VALUES (1, (SELECT count(*) FROM trades));"""
    )
    say(event="ready", engine="python", vfs="warden")
    for i in range(a.trades):
        if stop:
            break
        with conn:
            conn.execute(
                "INSERT INTO trades(symbol, qty, price) VALUES (?, ?, ?)",
                (("ACME", "GLOBX", "INIT")[i % 3], i % 7 + 1, 100.0 + i % 13),
            )
            conn.execute("UPDATE ledger SET trades = trades + 1 WHERE id = 1")
    deadline = time.monotonic() + a.hold_ms / 1000.0
    while time.monotonic() < deadline and not stop:
        time.sleep(0.005)
    total = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
    conn.close()
    say(event="done", trades_total=total, stopped_by_signal=bool(stop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
