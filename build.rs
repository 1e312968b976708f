//! Names the git revision in `provd --version` (the package says which commit it holds):
//! `PROVD_GIT_REV` from the environment when set (a build from a source tarball), else
//! `git describe` of this checkout, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PROVD_GIT_REV");
    for f in [".git/HEAD", ".git/index"] {
        if std::path::Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    let rev = std::env::var("PROVD_GIT_REV")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["describe", "--always", "--dirty", "--abbrev=12"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|r| !r.is_empty())
        });
    println!("cargo:rustc-env=PROVD_GIT_REV={}", rev.as_deref().unwrap_or("unknown"));
}
