//! What packagers and shells need from the command line itself: shell completion scripts
//! (`provd completions bash`) and one man page per command (`provd manpages --out DIR`:
//! `provd.1`, `provd-vm.1`, `provd-vm-clone.1`, ...), both generated from the same clap
//! definitions the parser uses, so they cannot fall behind the commands.

use clap::CommandFactory;
use std::path::Path;

/// The completion script for `shell`, on stdout (a reader that stops early, `| head`, is
/// not an error).
pub fn completions(shell: clap_complete::Shell) -> std::io::Result<()> {
    use std::io::Write;
    let mut cmd = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "provd", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Write a man page for `provd` and for every visible subcommand, nested ones named with
/// dashes (`provd-vm-clone.1`); returns the file names written, in order.
pub fn manpages(out: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(out)?;
    let mut cmd = super::Cli::command();
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, "provd", out, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: &clap::Command, name: &str, out: &Path, written: &mut Vec<String>) -> anyhow::Result<()> {
    // The page's title and NAME section say the dashed name (`man provd-vm-clone`).
    let page = cmd.clone().name(name.to_string()).bin_name(name.replace('-', " "));
    let mut text = Vec::new();
    clap_mangen::Man::new(page).render(&mut text)?;
    let file = format!("{name}.1");
    std::fs::write(out.join(&file), text)?;
    written.push(file);
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), out, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_page_named_with_dashes() {
        let dir = tempfile::tempdir().unwrap();
        let pages = manpages(dir.path()).unwrap();
        for want in [
            "provd.1",
            "provd-vm.1",
            "provd-vm-clone.1",
            "provd-hosts-reinstall.1",
            "provd-pki-init.1",
        ] {
            assert!(pages.iter().any(|p| p == want), "{want} missing from {pages:?}");
        }
        let clone = std::fs::read_to_string(dir.path().join("provd-vm-clone.1")).unwrap();
        assert!(
            clone.starts_with(".ie") || clone.contains(".TH"),
            "roff: {}",
            &clone[..80.min(clone.len())]
        );
        assert!(clone.contains("provd\\-vm\\-clone"), "the page names its command");
        // Hidden commands (this one) get no page.
        assert!(!pages.iter().any(|p| p.contains("manpages")));
    }
}
