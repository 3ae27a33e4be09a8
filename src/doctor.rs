//! Host readiness checks (being written).
