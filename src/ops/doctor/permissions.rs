//! The `permissions` check: owner and mode of the database's directory, the database, its
//! sidecars and the backup directory. Changes nothing; the fixes are advice.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use serde_json::json;

use super::facts::{group_name, user_name};
use super::model::{Check, Ctx, Verdict, mk};
use crate::copies::backup::sidecar;

fn raise(v: Verdict, verdict: &mut Verdict) {
    *verdict = (*verdict).max(v);
}

fn mode_owner(md: &std::fs::Metadata) -> String {
    format!("{:04o} {}:{}", md.mode() & 0o7777, user_name(md.uid()), group_name(md.gid()))
}

pub(super) fn permissions(cx: &Ctx<'_>) -> Check {
    const ID: &str = "permissions";
    const TITLE: &str = "ownership and mode of the database directory";
    let me = nix::unistd::geteuid().as_raw();
    let me_name = user_name(me);
    let mut verdict = Verdict::Pass;
    let mut facts = Vec::new();
    let mut problems = Vec::new();
    let mut fixes: Vec<String> = Vec::new();

    let dir_md = match std::fs::metadata(&cx.dir) {
        Ok(m) => m,
        Err(e) => {
            return mk(
                ID,
                TITLE,
                Verdict::Warn,
                format!("the database directory `{}` cannot be examined: {e}", cx.dir.display()),
                format!(
                    "create it for the engine's user: `install -d -m 0750 -o engine -g engine {}`",
                    cx.dir.display()
                ),
                json!({"dir": cx.dir, "error": e.to_string()}),
            );
        }
    };
    let dmode = dir_md.mode();
    facts.push(format!("directory `{}` {}", cx.dir.display(), mode_owner(&dir_md)));
    if dmode & 0o002 != 0 {
        raise(Verdict::Fail, &mut verdict);
        let sticky = if dmode & 0o1000 != 0 { " (sticky, but anyone can still plant a -journal or -wal)" } else { "" };
        problems.push(format!("the directory is world-writable{sticky}"));
        fixes.push(format!("chmod 0750 {}", cx.dir.display()));
    } else if dmode & 0o005 != 0 {
        raise(Verdict::Warn, &mut verdict);
        problems.push("others can list or enter the directory".into());
        fixes.push(format!("chmod 0750 {}", cx.dir.display()));
    }

    let db_md = std::fs::metadata(&cx.db).ok();
    let mut owners = BTreeSet::new();
    owners.insert(dir_md.uid());
    match &db_md {
        Some(m) => {
            facts.push(format!("database {}", mode_owner(m)));
            owners.insert(m.uid());
            let mode = m.mode();
            if mode & 0o002 != 0 {
                raise(Verdict::Fail, &mut verdict);
                problems.push("the database is world-writable".into());
                fixes.push(format!("chmod 0600 {}", cx.db.display()));
            } else if mode & 0o004 != 0 && dmode & 0o001 != 0 {
                raise(Verdict::Warn, &mut verdict);
                problems.push("others can read the database (world-readable, in a directory others can enter)".into());
                fixes.push(format!("chmod 0600 {}", cx.db.display()));
            } else if mode & 0o004 != 0 {
                facts.push("(world-readable, but the directory keeps others out)".into());
            }
            if m.uid() != dir_md.uid() {
                raise(Verdict::Warn, &mut verdict);
                problems.push(format!(
                    "the database is owned by {} but its directory by {}: the engine must be able to create -wal/-journal there",
                    user_name(m.uid()),
                    user_name(dir_md.uid())
                ));
            }
        }
        None => facts.push("database: does not exist yet".into()),
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let p = sidecar(&cx.db, suffix);
        if let Ok(m) = std::fs::metadata(&p)
            && m.mode() & 0o002 != 0
        {
            raise(Verdict::Fail, &mut verdict);
            problems.push(format!("{suffix} is world-writable"));
            fixes.push(format!("chmod 0600 {}", p.display()));
        }
    }
    match std::fs::metadata(&cx.backup_dir) {
        Ok(m) => {
            facts.push(format!("backups `{}` {}", cx.backup_dir.display(), mode_owner(&m)));
            if m.mode() & 0o002 != 0 {
                raise(Verdict::Fail, &mut verdict);
                problems.push("the backup directory is world-writable".into());
                fixes.push(format!("chmod 0700 {}", cx.backup_dir.display()));
            } else if m.mode() & 0o005 != 0 {
                raise(Verdict::Warn, &mut verdict);
                problems.push("others can read the backup directory".into());
                fixes.push(format!("chmod 0700 {}", cx.backup_dir.display()));
            }
        }
        Err(_) => {
            facts.push(format!("backups `{}`: not created yet (warden creates it 0700)", cx.backup_dir.display()))
        }
    }
    let owner_uid = db_md.as_ref().map(|m| m.uid()).unwrap_or(dir_md.uid());
    let owner = user_name(owner_uid);
    if me == 0 {
        let advice = if owner_uid == 0 {
            "the engine would have to run as root, and a dedicated user (e.g. `engine`) owning the directory is safer"
                .to_owned()
        } else {
            format!("the engine's service must run as {owner} (User=)")
        };
        facts.push(format!("doctor runs as root; the database belongs to {owner}: {advice}"));
    } else if owners.iter().any(|&u| u != me) {
        raise(Verdict::Warn, &mut verdict);
        let others: Vec<String> = owners.iter().filter(|&&u| u != me).map(|&u| user_name(u)).collect();
        problems.push(format!("owned by {} while doctor runs as {me_name}", others.join(", ")));
        fixes.push(format!("run doctor as the engine's user (`sudo -u {owner} warden doctor …`)"));
    } else {
        facts.push(format!("doctor runs as the owner ({me_name})"));
    }
    if owners.len() > 1 {
        fixes.push(format!(
            "chown {owner}:{} {} {}",
            group_name(db_md.as_ref().map(|m| m.gid()).unwrap_or(dir_md.gid())),
            cx.dir.display(),
            cx.db.display()
        ));
    }
    let detail = problems.iter().chain(facts.iter()).cloned().collect::<Vec<_>>().join("; ");
    fixes.dedup();
    let data = json!({
        "dir": {"path": cx.dir, "mode": format!("{:04o}", dmode & 0o7777), "uid": dir_md.uid(), "gid": dir_md.gid()},
        "database": db_md.as_ref().map(|m| json!({"mode": format!("{:04o}", m.mode() & 0o7777), "uid": m.uid(), "gid": m.gid()})),
        "doctor_uid": me,
        "problems": problems,
    });
    mk(ID, TITLE, verdict, detail, fixes.join("; "), data)
}
