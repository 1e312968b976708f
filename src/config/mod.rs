//! Site configuration: reads TOML files once into a validated model that the rest of provd
//! trusts without re-checking.
//!
//! `wire` is the on-disk syntax (serde, unknown keys denied); `model` is what the daemon uses;
//! `validate` turns one into the other and reports every problem it finds, each naming the
//! file, the line and the key. `provd check` and `provd serve` call the same `load`, so a
//! config that passes `check` is exactly a config the daemon accepts.
//!
//! This module never touches the network or the store.

pub mod disk_rule;
mod index;
mod model;
pub mod reload;
pub mod topology;
mod validate;
mod wire;

pub use index::{HostEntry, HostIndex};
pub use model::*;
pub use validate::valid_hostname;

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one file. `line` is 1-based; `key` is the dotted path of the offending key
/// (e.g. `sites.dc1.subnets[0].pools[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: ", self.file.display(), line)?,
            None => write!(f, "{}: ", self.file.display())?,
        }
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// All problems found in a set of files. Displayed one per line.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Expand the paths given on the command line: a directory stands for every `*.toml` in it
/// (sorted, so that error order and precedence are stable).
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigErrors> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| io_error(p, &e))?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err(ConfigErrors(vec![ConfigError {
            file: paths.first().cloned().unwrap_or_default(),
            line: None,
            key: String::new(),
            message: "no config files found".into(),
        }]));
    }
    Ok(out)
}

/// Read, parse and validate a set of config files (or directories of them), and the
/// `*.toml` files of `[daemon] hosts_dir` when the config names one (adopted hosts).
pub fn load(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let mut files = expand_paths(paths)?;
    let mut sources = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| io_error(f, &e))?;
        sources.push((f.clone(), text));
    }
    if let Some(dir) = hosts_dir_of(&sources) {
        // A directory that does not exist yet holds nothing (the first adoption makes it).
        if dir.is_dir() {
            for f in expand_paths(std::slice::from_ref(&dir)).unwrap_or_default() {
                if files.contains(&f) {
                    continue;
                }
                let text = std::fs::read_to_string(&f).map_err(|e| io_error(&f, &e))?;
                files.push(f.clone());
                sources.push((f, text));
            }
        }
    }
    load_from_strs(&sources)
}

/// `[daemon] hosts_dir` as the sources say (a light read of that one key: the full
/// validation, which reports any error in it, comes after).
fn hosts_dir_of(sources: &[(PathBuf, String)]) -> Option<PathBuf> {
    #[derive(serde::Deserialize)]
    struct Only {
        daemon: Option<OnlyDaemon>,
    }
    #[derive(serde::Deserialize)]
    struct OnlyDaemon {
        hosts_dir: Option<String>,
    }
    sources
        .iter()
        .filter_map(|(_, text)| toml::from_str::<Only>(text).ok()?.daemon?.hosts_dir)
        .next()
        .map(PathBuf::from)
}

/// Parse and validate already-read sources; used by `load` and by tests.
pub fn load_from_strs(sources: &[(PathBuf, String)]) -> Result<Config, ConfigErrors> {
    validate::build(sources)
}

fn io_error(path: &Path, e: &std::io::Error) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: path.to_path_buf(),
        line: None,
        key: String::new(),
        message: format!("cannot read: {e}"),
    }])
}

/// `a/./b/../c` -> `a/c`, without touching the file system (for paths that may not exist
/// yet, like a state directory before the first start).
pub fn lexically_normal(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A path as the file system resolves it when it exists (symlinks followed), else made
/// absolute and normalised lexically (a state directory before the first start).
fn resolved(p: &Path) -> PathBuf {
    let absolute = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    absolute.canonicalize().unwrap_or_else(|_| lexically_normal(&absolute))
}

/// Which secret-holding directory, if any, lies inside the assets directory (which TFTP and
/// HTTP serve to every machine on the boot network). `provd check` asks it of the config,
/// `provd serve` of the directories it will really use (`--state-dir` included).
pub fn secrets_under_assets(assets_dir: &Path, daemon: &Daemon, state_dir: &Path) -> Option<&'static str> {
    let mut secrets = vec![
        (
            state_dir.to_path_buf(),
            "the state directory (leases, tokens, the API token)",
        ),
        (daemon.pki_dir(state_dir), "the PKI directory (the CA key)"),
    ];
    if let Some(file) = &daemon.bmc_secrets {
        secrets.push((file.clone(), "the BMC secrets file (bmc_secrets: BMC passwords)"));
    }
    let assets = resolved(assets_dir);
    secrets
        .into_iter()
        .find(|(path, _)| resolved(path).starts_with(&assets))
        .map(|(_, what)| what)
}

/// Whether `file` (a config file: it names BMC credential files, tokens' lifetimes, the
/// whole site layout) lies inside the assets directory that TFTP and HTTP serve.
pub fn is_under_assets(assets_dir: &Path, file: &Path) -> bool {
    resolved(file).starts_with(resolved(assets_dir))
}
