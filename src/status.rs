//! Operator views: status, health, Prometheus textfile (being written).
