//! Service files for systemd and logrotate (being written).
