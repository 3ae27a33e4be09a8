//! Rendering helpers shared by the subcommands' human output: sizes and hashes, written the
//! same way by every command (the library's `util::fmt`). Does not own: what a command
//! prints, or its `--json` output.

pub(crate) use sqlite_warden::util::fmt::{human_bytes, short_hash};
