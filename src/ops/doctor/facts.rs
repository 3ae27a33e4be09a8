//! Small readers and formatters of host facts shared by the checks: byte sizes, user and
//! group names, one-line sysfs/procfs files. Does not judge anything.

use std::path::Path;

pub(super) use crate::util::fmt::human_bytes as bytes;

pub(super) fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

pub(super) fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => format!("gid {gid}"),
    }
}

pub(super) fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}
