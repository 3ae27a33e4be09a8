//! Salvage of damaged databases (being written).
