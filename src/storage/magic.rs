//! statfs `f_type` magic numbers (Linux `include/uapi/linux/magic.h` and filesystem sources).
//!
//! Owns: the table of magics and their names. Does not own: the decision (see
//! [`crate::storage::classify_mount`]). Magics are compared as `u32`: `f_type` is a signed 64-bit
//! value on x86_64, unsigned 32-bit on s390x and signed 32-bit on 32-bit targets, and
//! values such as CIFS's `0xFF534D42` come back sign-extended on some of them.

/// NFS (all versions).
pub const NFS_SUPER_MAGIC: u32 = 0x6969;
/// SMB (smbfs, the old client).
pub const SMB_SUPER_MAGIC: u32 = 0x517B;
/// CIFS.
pub const CIFS_MAGIC_NUMBER: u32 = 0xFF53_4D42;
/// SMB2/3 (the cifs client mounted as smb3).
pub const SMB2_MAGIC_NUMBER: u32 = 0xFE53_4D42;
/// AFS (kAFS).
pub const AFS_SUPER_MAGIC: u32 = 0x5346_414F;
/// AFS (OpenAFS).
pub const AFS_FS_MAGIC: u32 = 0x6B41_4653;
/// CephFS.
pub const CEPH_SUPER_MAGIC: u32 = 0x00C3_6400;
/// 9p (also WSL's drvfs and many VM shares).
pub const V9FS_MAGIC: u32 = 0x0102_1997;
/// Coda.
pub const CODA_SUPER_MAGIC: u32 = 0x7375_7245;
/// NCP (NetWare).
pub const NCP_SUPER_MAGIC: u32 = 0x564C;
/// OCFS2 (a cluster filesystem).
pub const OCFS2_SUPER_MAGIC: u32 = 0x7461_636F;
/// GFS2 (a cluster filesystem).
pub const GFS2_MAGIC: u32 = 0x0116_1970;
/// Lustre.
pub const LUSTRE_SUPER_MAGIC: u32 = 0x0BD0_0BD0;
/// GPFS / IBM Storage Scale.
pub const GPFS_SUPER_MAGIC: u32 = 0x4750_4653;
/// VirtualBox shared folders.
pub const VBOXSF_MAGIC: u32 = 0x786F_4256;
/// OrangeFS / PVFS2.
pub const ORANGEFS_MAGIC: u32 = 0x2011_0217;
/// Every FUSE filesystem, local or remote; only mountinfo's subtype tells them apart.
pub const FUSE_SUPER_MAGIC: u32 = 0x6573_5546;
/// tmpfs.
pub const TMPFS_MAGIC: u32 = 0x0102_1994;
/// ext2/3/4.
pub const EXT4_SUPER_MAGIC: u32 = 0xEF53;
/// XFS.
pub const XFS_SUPER_MAGIC: u32 = 0x5846_5342;
/// Btrfs.
pub const BTRFS_SUPER_MAGIC: u32 = 0x9123_683E;
/// overlayfs.
pub const OVERLAYFS_SUPER_MAGIC: u32 = 0x794C_7630;

const NETWORK: &[(u32, &str)] = &[
    (NFS_SUPER_MAGIC, "nfs"),
    (SMB_SUPER_MAGIC, "smb"),
    (CIFS_MAGIC_NUMBER, "cifs"),
    (SMB2_MAGIC_NUMBER, "smb2"),
    (AFS_SUPER_MAGIC, "afs"),
    (AFS_FS_MAGIC, "afs"),
    (CEPH_SUPER_MAGIC, "ceph"),
    (V9FS_MAGIC, "9p"),
    (CODA_SUPER_MAGIC, "coda"),
    (NCP_SUPER_MAGIC, "ncpfs"),
    (OCFS2_SUPER_MAGIC, "ocfs2"),
    (GFS2_MAGIC, "gfs2"),
    (LUSTRE_SUPER_MAGIC, "lustre"),
    (GPFS_SUPER_MAGIC, "gpfs"),
    (VBOXSF_MAGIC, "vboxsf"),
    (ORANGEFS_MAGIC, "orangefs"),
];

const OTHER: &[(u32, &str)] = &[
    (FUSE_SUPER_MAGIC, "fuse"),
    (TMPFS_MAGIC, "tmpfs"),
    (EXT4_SUPER_MAGIC, "ext4"),
    (XFS_SUPER_MAGIC, "xfs"),
    (BTRFS_SUPER_MAGIC, "btrfs"),
    (OVERLAYFS_SUPER_MAGIC, "overlay"),
];

/// Every network magic warden knows, with its name.
pub fn network_magics() -> &'static [(u32, &'static str)] {
    NETWORK
}

/// The name of a network filesystem magic.
pub fn network_name(magic: u32) -> Option<&'static str> {
    NETWORK.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n)
}

/// The name of any magic in the table.
pub fn name(magic: u32) -> Option<&'static str> {
    network_name(magic).or_else(|| OTHER.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n))
}

/// Normalises a raw `f_type` of any width and sign to the 32-bit magic.
pub fn from_raw(f_type: i64) -> u32 {
    // Truncation is the point: the magic is the low 32 bits, however the ABI widened it.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let m = f_type as u32;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_against_libc_and_literals() {
        assert_eq!(NFS_SUPER_MAGIC, 0x0000_6969);
        assert_eq!(i64::from(NFS_SUPER_MAGIC), libc::NFS_SUPER_MAGIC);
        assert_eq!(i64::from(SMB_SUPER_MAGIC), libc::SMB_SUPER_MAGIC);
        assert_eq!(i64::from(CODA_SUPER_MAGIC), libc::CODA_SUPER_MAGIC);
        assert_eq!(i64::from(TMPFS_MAGIC), libc::TMPFS_MAGIC);
        assert_eq!(i64::from(FUSE_SUPER_MAGIC), libc::FUSE_SUPER_MAGIC);
        assert_eq!(i64::from(BTRFS_SUPER_MAGIC), libc::BTRFS_SUPER_MAGIC);
    }

    #[test]
    fn sign_extended_values_normalise() {
        // CIFS's magic as a sign-extended 32-bit value.
        assert_eq!(from_raw(0xFF53_4D42_u32 as i32 as i64), CIFS_MAGIC_NUMBER);
        assert_eq!(from_raw(0xFF53_4D42), CIFS_MAGIC_NUMBER);
        assert_eq!(network_name(from_raw(-11_317_950)), Some("cifs"), "0xFF534D42 as a negative i32");
    }
}
