//! Analysis snapshots (being written).
