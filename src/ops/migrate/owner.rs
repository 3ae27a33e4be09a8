//! The owner an import gives the database and its state ([`Owner`]): resolving `USER[:GROUP]` and
//! `chown`. Does not own: when the owner is applied (the import).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{MigrateError, io_err};

/// The owner an import gives the database and its state: a user and a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// As given (`engine`, `engine:engine`, `1001:1001`).
    pub spec: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Owner {
    /// Resolves `USER[:GROUP]` (names or numeric ids); without a group, the user's primary
    /// group.
    ///
    /// # Errors
    /// [`MigrateError::UnknownOwner`] when the user or group does not exist.
    pub fn resolve(spec: &str) -> Result<Owner, MigrateError> {
        use nix::unistd::{Group, User};
        let unknown = || MigrateError::UnknownOwner { spec: spec.to_owned() };
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
            None => (spec, None),
        };
        if user.is_empty() {
            return Err(unknown());
        }
        // A name first; a number only when no account has that name.
        let u = User::from_name(user).ok().flatten().or_else(|| {
            let uid = user.parse().ok()?;
            User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten()
        });
        let uid = match &u {
            Some(u) => u.uid.as_raw(),
            None => user.parse().map_err(|_| unknown())?,
        };
        let gid = match group {
            Some(g) => Group::from_name(g).ok().flatten().map(|g| g.gid.as_raw()).or_else(|| g.parse().ok()),
            None => u.as_ref().map(|u| u.gid.as_raw()),
        }
        .ok_or_else(unknown)?;
        Ok(Owner { spec: spec.to_owned(), uid, gid })
    }

    /// `spec (uid:gid)`.
    pub fn describe(&self) -> String {
        format!("{} ({}:{})", self.spec, self.uid, self.gid)
    }

    pub(super) fn apply(&self, path: &Path) -> Result<(), MigrateError> {
        use nix::unistd::{Gid, Uid, chown};
        chown(path, Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid))).map_err(|e| match e {
            nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => {
                MigrateError::ChownNotPermitted { path: path.to_owned(), owner: self.describe(), source: e.into() }
            }
            e => io_err("chown", path)(e.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_resolves_root_and_refuses_unknown() {
        let o = Owner::resolve("root").unwrap();
        assert_eq!((o.uid, o.gid), (0, 0));
        assert_eq!(Owner::resolve("0:0").unwrap().uid, 0);
        assert!(matches!(Owner::resolve("no-such-user-warden"), Err(MigrateError::UnknownOwner { .. })));
        assert!(matches!(Owner::resolve("root:no-such-group-warden"), Err(MigrateError::UnknownOwner { .. })));
    }
}
