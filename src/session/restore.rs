//! Restore and restore drills (being written).
