//! Moving a database between hosts: bundles (being written).
