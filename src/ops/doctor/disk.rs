//! The `fsync` check (timed `fsync`s in the database's directory) and the `device` check
//! (SSD or rotational, from sysfs). Does not own the storage verdict or the mount table.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::facts::{read_trim, user_name};
use super::model::{Check, Ctx, Verdict, mk};

/// The median of `v` (sorted in place); 0 when empty.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

pub(super) fn fsync(cx: &Ctx<'_>) -> Check {
    const ID: &str = "fsync";
    const TITLE: &str = "fsync works, and how long it takes";
    let dir = &cx.dir;
    if !dir.is_dir() {
        return mk(
            ID,
            TITLE,
            Verdict::Warn,
            format!("the database directory `{}` does not exist yet: fsync not measured", dir.display()),
            format!("create it (e.g. `install -d -m 0750 -o engine -g engine {}`) and run doctor again", dir.display()),
            json!({"dir": dir}),
        );
    }
    let name = cx.db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into());
    let path = crate::util::atomic::temp_path_for(&dir.join(format!("{name}-doctor-fsync")));
    let file = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
        Ok(f) => f,
        Err(e) => {
            let denied = e.kind() == io::ErrorKind::PermissionDenied;
            let who = user_name(nix::unistd::geteuid().as_raw());
            return mk(
                ID,
                TITLE,
                if denied { Verdict::Warn } else { Verdict::Fail },
                format!("cannot create a file in `{}` as {who}: {e}", dir.display()),
                if denied {
                    "run doctor as the engine's user (e.g. `sudo -u engine warden doctor …`) so it can measure fsync where the engine writes".into()
                } else {
                    format!(
                        "the engine could not create its -journal/-wal here either: fix `{}` (read-only? full?)",
                        dir.display()
                    )
                },
                json!({"dir": dir, "error": e.to_string()}),
            );
        }
    };
    let samples = cx.opts.fsync_samples.max(1);
    let block = vec![0x5a_u8; 4096];
    let mut times = Vec::with_capacity(samples as usize);
    let mut failure = None;
    for i in 0..samples {
        if let Err(e) = file.write_all_at(&block, 0) {
            failure = Some(format!("write {} failed: {e}", i + 1));
            break;
        }
        let t = Instant::now();
        match file.sync_all() {
            Ok(()) => times.push(t.elapsed().as_secs_f64() * 1000.0),
            Err(e) => {
                failure = Some(format!("fsync {} failed: {e}", i + 1));
                break;
            }
        }
    }
    drop(file);
    let cleanup = std::fs::remove_file(&path).and_then(|()| crate::util::atomic::sync_dir(dir));
    let cleaned = match &cleanup {
        Ok(()) => "temporary file removed".to_owned(),
        Err(e) => format!("could not remove the temporary file `{}`: {e}", path.display()),
    };
    let fstype = cx.db_verdict.as_ref().map(|v| v.fstype.clone()).unwrap_or_else(|_| "unknown".into());
    if let Some(why) = failure {
        return mk(
            ID,
            TITLE,
            Verdict::Fail,
            format!("in `{}` ({fstype}): {why}; {cleaned}", dir.display()),
            "committed transactions are not durable here: put the database on a local disk whose fsync works".into(),
            json!({"dir": dir, "fstype": fstype, "error": why}),
        );
    }
    let max = times.iter().copied().fold(0.0, f64::max);
    let med = median(&mut times);
    let verdict = if med > cx.opts.fsync_warn_ms || cleanup.is_err() { Verdict::Warn } else { Verdict::Pass };
    let mut detail = format!(
        "{samples} fsyncs of a 4 KiB write in `{}` ({fstype}): median {med:.2} ms, max {max:.2} ms (warn above a {:.0} ms median); {cleaned}",
        dir.display(),
        cx.opts.fsync_warn_ms
    );
    if let Ok(v) = &cx.db_verdict
        && !v.kind.is_local()
    {
        detail.push_str(&format!(
            "; on {} storage a successful fsync proves little: the server decides what is durable (see the storage check)",
            v.kind
        ));
    }
    let fix = if med > cx.opts.fsync_warn_ms {
        format!(
            "every commit waits for fsync (≈{med:.0} ms here): use a local SSD/NVMe volume, or look for I/O contention (`iostat -x 1`)"
        )
    } else {
        format!("remove `{}` by hand", path.display())
    };
    let data = json!({"dir": dir, "fstype": fstype, "samples": samples, "median_ms": med, "max_ms": max,
        "warn_above_ms": cx.opts.fsync_warn_ms});
    mk(ID, TITLE, verdict, detail, fix, data)
}

/// What sysfs says about one block device.
struct BlockDev {
    name: String,
    sys_path: PathBuf,
    partition_of: Option<String>,
    rotational: Option<bool>,
    virtio: bool,
    backing_file: Option<String>,
}

fn sysfs_block(major: u32, minor: u32) -> Option<BlockDev> {
    let link = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let real = std::fs::canonicalize(&link).ok()?;
    let own_name = real.file_name()?.to_string_lossy().into_owned();
    let (disk, partition_of) = if real.join("partition").exists() {
        let parent = real.parent()?.to_owned();
        let pname = parent.file_name()?.to_string_lossy().into_owned();
        (parent, Some(pname))
    } else {
        (real.clone(), None)
    };
    let rotational = read_trim(&disk.join("queue/rotational")).map(|s| s == "1");
    let name = partition_of.as_ref().map(|d| format!("{own_name} (partition of {d})")).unwrap_or(own_name);
    Some(BlockDev {
        name,
        virtio: real.components().any(|c| c.as_os_str().to_string_lossy().starts_with("virtio")),
        backing_file: read_trim(&disk.join("loop/backing_file")),
        sys_path: real,
        partition_of,
        rotational,
    })
}

pub(super) fn device(cx: &Ctx<'_>) -> Check {
    const ID: &str = "device";
    const TITLE: &str = "SSD or rotational disk";
    let facts = cx.opts.probe.facts_nearest(&cx.dir);
    let table = cx.opts.probe.mounts();
    let (facts, table) = match (facts, table) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => {
            return mk(
                ID,
                TITLE,
                Verdict::Warn,
                format!("unknown: the database directory cannot be examined: {e}"),
                "run doctor where it can stat the database directory".into(),
                json!({"error": e.to_string()}),
            );
        }
    };
    let entry = table.find(facts.dev, &facts.canonical);
    let fstype = entry.map(|e| e.fstype.clone()).unwrap_or_else(|| "unknown".into());
    let source = entry.map(|e| e.source.clone()).unwrap_or_default();
    // The block device: st_dev itself, or (btrfs and other anonymous devices) the mount
    // source when it is a device node.
    let mut numbers = facts.dev.filter(|(maj, _)| *maj != 0);
    let mut via_source = false;
    if numbers.is_none()
        && source.starts_with("/dev/")
        && let Ok(md) = std::fs::metadata(&source)
        && md.rdev() != 0
    {
        numbers = Some((libc::major(md.rdev()), libc::minor(md.rdev())));
        via_source = true;
    }
    let dev_text = facts.dev.map(|(a, b)| format!("{a}:{b}")).unwrap_or_else(|| "?".into());
    let Some((maj, min)) = numbers else {
        let kind = match cx.db_verdict.as_ref().map(|v| v.kind) {
            Ok(k) if !k.is_local() => format!("{k} storage"),
            _ => "a virtual filesystem".into(),
        };
        return mk(
            ID,
            TITLE,
            Verdict::Warn,
            format!(
                "unknown: `{}` is on {fstype} (device {dev_text}, source {}), {kind} without a block device of its own, so there is no queue/rotational to read",
                cx.dir.display(),
                if source.is_empty() { "none" } else { &source }
            ),
            "on the VPS put the database on the disk itself (ext4/xfs on the block device), then run doctor again to see SSD or rotational".into(),
            json!({"fstype": fstype, "dev": dev_text, "source": source, "rotational": null}),
        );
    };
    let Some(b) = sysfs_block(maj, min) else {
        return mk(
            ID,
            TITLE,
            Verdict::Warn,
            format!(
                "unknown: `{}` is on {fstype} (device {maj}:{min}{}), but /sys/dev/block/{maj}:{min} does not exist",
                cx.dir.display(),
                if via_source { format!(" via {source}") } else { String::new() }
            ),
            "check the disk by hand: `lsblk -o NAME,ROTA,TYPE,MOUNTPOINT`".into(),
            json!({"fstype": fstype, "dev": format!("{maj}:{min}"), "rotational": null}),
        );
    };
    let mut extra = Vec::new();
    if b.virtio {
        extra.push(
            "a virtio disk: the hypervisor decides what it reports, and rotational=1 often only means the host did not say"
                .to_owned(),
        );
    }
    if let Some(f) = &b.backing_file {
        extra.push(format!("a loop device backed by `{f}`"));
    }
    let extra = if extra.is_empty() { String::new() } else { format!("; {}", extra.join("; ")) };
    let (verdict, what, fix) = match b.rotational {
        Some(false) => (Verdict::Pass, "SSD (queue/rotational = 0)".to_owned(), String::new()),
        Some(true) => (
            Verdict::Warn,
            "rotational (queue/rotational = 1)".to_owned(),
            "expect slower fsync (see the fsync check): prefer an SSD/NVMe volume for the database, or confirm with your provider that this volume is SSD-backed".to_owned(),
        ),
        None => (
            Verdict::Warn,
            "unknown (no queue/rotational)".to_owned(),
            "check the disk by hand: `lsblk -o NAME,ROTA,TYPE,MOUNTPOINT`".to_owned(),
        ),
    };
    let detail = format!(
        "`{}` is on {fstype}, device {maj}:{min} = {} ({}): {what}{extra}",
        cx.dir.display(),
        b.name,
        b.sys_path.display()
    );
    let data = json!({"fstype": fstype, "dev": format!("{maj}:{min}"), "device": b.name, "disk": b.partition_of,
        "sysfs": b.sys_path, "rotational": b.rotational, "virtio": b.virtio, "loop_backing_file": b.backing_file});
    mk(ID, TITLE, verdict, detail, fix, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
