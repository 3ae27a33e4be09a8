//! `warden completions` and `warden manpage`: shell completion scripts and manual pages
//! generated from the clap definitions, so they never drift from the flags. Owns: rendering
//! them, and writing the pages into a directory (`manpage --dir`, one page per command, as a
//! package ships them). Does not own: the definitions themselves (`cli::Args`) or where a
//! package installs them (`Cargo.toml`'s `[package.metadata.deb]`, `scripts/deb`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory as _;
use sqlite_warden::util::atomic;

use super::{Args, CliError};

/// The completion script for `shell` on stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> Result<ExitCode, CliError> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "warden", &mut buf);
    out!("{}", String::from_utf8_lossy(&buf));
    Ok(ExitCode::SUCCESS)
}

/// The top-level page on stdout, or with `dir` every page (warden.1, warden-run.1,
/// warden-backups-verify.1, …) written atomically into `dir`, one line per page on stdout.
pub(super) fn manpage(dir: Option<&Path>) -> Result<ExitCode, CliError> {
    let io = |context: String| move |source| CliError::Io { context, source };
    let Some(dir) = dir else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(Args::command())
            .render(&mut buf)
            .map_err(io("rendering the manual page".into()))?;
        out!("{}", String::from_utf8_lossy(&buf));
        return Ok(ExitCode::SUCCESS);
    };
    atomic::create_dir_synced(dir, 0o755).map_err(io(format!("creating {}", dir.display())))?;
    for (name, page) in pages().map_err(io("rendering the manual pages".into()))? {
        let path = dir.join(&name);
        atomic::write_atomic(&path, &page, 0o644).map_err(io(format!("writing {}", path.display())))?;
        outln!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Every manual page: (file name, roff), the top-level page first, then each visible
/// subcommand's (nested ones too), named `warden-<command>[-<subcommand>].1`.
fn pages() -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    fn walk(cmd: &clap::Command, out: &mut Vec<(PathBuf, Vec<u8>)>) -> std::io::Result<()> {
        let man = clap_mangen::Man::new(cmd.clone());
        let mut buf = Vec::new();
        man.render(&mut buf)?;
        out.push((PathBuf::from(man.get_filename()), buf));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, out)?;
        }
        Ok(())
    }
    let mut cmd = Args::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_is_a_page_per_command_named_after_it() {
        let pages = pages().unwrap();
        let names: Vec<String> = pages.iter().map(|(n, _)| n.display().to_string()).collect();
        for want in ["warden.1", "warden-run.1", "warden-backups.1", "warden-backups-verify.1", "warden-offsite-push.1"] {
            assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "no page for clap's help subcommand: {names:?}");
        let run = &pages.iter().find(|(n, _)| n.as_os_str() == "warden-run.1").unwrap().1;
        let run = String::from_utf8_lossy(run);
        assert!(run.contains(".TH warden-run 1") && run.contains("snapshot\\-every"), "{run}");
    }
}
