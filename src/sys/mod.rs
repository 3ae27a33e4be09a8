//! Every `unsafe` block of the crate lives under this module.
//!
//! Owns the VFS tables and callbacks ([`vfs`]). Does not own any decision: the safe half
//! (in `guard`) decides, this layer turns pointers into Rust values and back.

#![allow(unsafe_code)]

pub mod vfs;
