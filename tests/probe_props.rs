//! Property tests of the filesystem probe against generated mount tables and paths.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sqlite_warden::storage::mountinfo::{MountTable, escape, parse, unescape};
use sqlite_warden::storage::{FsKind, SimulatedProbe, classify, classify_mount, magic};

fn segment() -> impl Strategy<Value = String> {
    // Path segments with the characters the kernel escapes, and a few odd ones.
    proptest::string::string_regex("[a-z0-9 \\\\\t\u{e9}._-]{1,8}")
        .unwrap()
        .prop_filter("no dots", |s| s != "." && s != "..")
}

fn abs_path() -> impl Strategy<Value = PathBuf> {
    proptest::collection::vec(segment(), 1..5).prop_map(|segs| {
        let mut p = PathBuf::from("/");
        for s in segs {
            p.push(s);
        }
        p
    })
}

const NETWORK: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "9p",
    "drvfs",
    "vboxsf",
    "lustre",
    "gpfs",
    "ceph",
    "fuse.sshfs",
    "fuse.rclone",
    "fuse.s3fs",
    "fuse.gcsfuse",
    "fuse.glusterfs",
    "fuse.davfs2",
    "fuse.juicefs",
];
const LOCAL: &[&str] = &["ext4", "xfs", "btrfs", "zfs", "tmpfs", "f2fs", "fuseblk"];

proptest! {
    #[test]
    fn escapes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(unescape(&escape(&bytes)), bytes);
    }

    #[test]
    fn parser_never_panics(text in ".{0,400}") {
        let _ = parse(&text);
    }

    #[test]
    fn generated_tables_round_trip_and_deepest_mount_wins(
        mounts in proptest::collection::vec((abs_path(), 0usize..(NETWORK.len() + LOCAL.len())), 1..12),
        tail in proptest::collection::vec(segment(), 0..3),
    ) {
        use std::os::unix::ffi::OsStrExt;
        let mut probe = SimulatedProbe::local_root();
        for (mp, t) in &mounts {
            let fstype = NETWORK.iter().chain(LOCAL).nth(*t).unwrap();
            probe = probe.mount(mp, fstype, "src", "rw");
        }
        // Every mount point survives the text round trip.
        let table = MountTable::parse(&probe.mountinfo());
        prop_assert_eq!(table.entries().len(), mounts.len() + 1);
        for (e, (mp, _)) in table.entries()[1..].iter().zip(&mounts) {
            prop_assert_eq!(e.mount_point_bytes(), mp.as_os_str().as_bytes());
        }
        // A path below the first generated mount is owned by the deepest mount containing
        // it; on equal mount points the later one wins (it hides the earlier).
        let mut target = mounts[0].0.clone();
        for s in &tail { target.push(s); }
        let expected = mounts.iter().enumerate()
            .filter(|(_, (mp, _))| target.starts_with(mp))
            .max_by_key(|(i, (mp, _))| (mp.components().count(), *i))
            .map(|(_, (_, t))| *NETWORK.iter().chain(LOCAL).nth(*t).unwrap())
            .unwrap();
        let found = table.find(None, &target).unwrap();
        prop_assert_eq!(found.fstype.as_str(), expected);
        let v = classify(&probe, &target).unwrap();
        let want = if NETWORK.contains(&expected) { FsKind::Network } else { FsKind::Local };
        prop_assert_eq!(v.kind, want, "{} on {}", target.display(), expected);
    }

    #[test]
    fn every_network_type_and_lock_option_is_refused_for_the_engine(
        t in 0usize..NETWORK.len(),
        opt in prop::sample::select(vec!["rw", "rw,nobrl", "rw,nolock", "rw,vers=4.2,local_lock=all", "ro,noatime"]),
    ) {
        let line = format!("40 1 0:50 / /mnt rw - {} src {opt}", NETWORK[t]);
        let e = parse(&line).pop().unwrap();
        let v = classify_mount(Some(&e), None, &mut |_| None);
        prop_assert!(!v.kind.is_local());
        let lock_off = opt.contains("nobrl") || opt.contains("nolock")
            || (opt.contains("local_lock=all") && NETWORK[t].starts_with("nfs"));
        if lock_off {
            prop_assert_eq!(v.kind, FsKind::NoLocking);
        }
        let policy = sqlite_warden::Policy::default();
        let r = sqlite_warden::guard::policy::decide(sqlite_warden::Role::Engine, Path::new("/mnt/x.db"), &v, Default::default(), &policy);
        prop_assert!(r.is_err());
    }

    #[test]
    fn local_types_are_accepted(t in 0usize..LOCAL.len()) {
        let line = format!("40 1 8:1 / /data rw - {} /dev/sda1 rw,relatime", LOCAL[t]);
        let e = parse(&line).pop().unwrap();
        let v = classify_mount(Some(&e), None, &mut |_| None);
        prop_assert_eq!(v.kind, FsKind::Local);
        let policy = sqlite_warden::Policy::default();
        prop_assert!(sqlite_warden::guard::policy::decide(sqlite_warden::Role::Engine, Path::new("/data/x.db"), &v, Default::default(), &policy).is_ok());
    }

    #[test]
    fn every_network_magic_alone_is_network(i in 0usize..magic::network_magics().len()) {
        let (m, _) = magic::network_magics()[i];
        let v = classify_mount(None, Some(m), &mut |_| None);
        prop_assert_eq!(v.kind, FsKind::Network);
        // Sign-extended forms of the same magic normalise to it.
        prop_assert_eq!(magic::from_raw(i64::from(m as i32)), m);
    }
}

#[test]
fn bind_mount_with_subdirectory_root_and_escaped_mount_point() {
    let text = "\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
50 1 0:60 /exports/trading /srv/my\\040share rw,relatime shared:5 - nfs4 nas:/exports rw,vers=4.2,local_lock=none
51 1 8:1 /var/data /data rw - ext4 /dev/sda1 rw";
    let probe = SimulatedProbe::from_mountinfo(text);
    let v = classify(&probe, Path::new("/srv/my share/engine.db")).unwrap();
    assert_eq!(v.kind, FsKind::Network);
    assert_eq!(v.mount_point.as_deref(), Some(Path::new("/srv/my share")));
    let t = MountTable::parse(text);
    let bind = t.find(Some((8, 1)), Path::new("/data/x.db")).unwrap();
    assert_eq!(bind.root, Path::new("/var/data"));
}

#[test]
fn large_mount_tables_resolve_by_device() {
    // 5000 mounts, one lookup: the device index keeps this a hash lookup plus a scan of
    // that device's mounts, not of the table.
    let mut text = String::from("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n");
    for i in 0..5000 {
        text.push_str(&format!("{} 1 0:{} / /run/k/{i} rw - tmpfs tmpfs rw\n", i + 10, i + 100));
    }
    let t = MountTable::parse(&text);
    let start = std::time::Instant::now();
    for _ in 0..1000 {
        assert_eq!(t.find(Some((8, 1)), Path::new("/var/lib/engine/engine.db")).unwrap().fstype, "ext4");
    }
    // Correctness is the assertion above; the timing is reported, not asserted (benches/
    // holds the speed goals).
    eprintln!("1000 lookups in a 5001-mount table: {:?}", start.elapsed());
}
