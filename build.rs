//! Build metadata: the git revision the binary is built from, for `authgate_build_info`.
//!
//! `AUTHGATE_REVISION` in the build's environment wins (the container build passes it: the
//! build context has no `.git`); otherwise `git rev-parse --short=12 HEAD`; otherwise
//! `unknown`. Only `[0-9A-Za-z._-]`, at most 64 characters, is kept: the value becomes a
//! Prometheus label.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=AUTHGATE_REVISION");
    let revision = std::env::var("AUTHGATE_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(git_revision)
        .filter(|r| valid(r))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=AUTHGATE_REVISION={revision}");
}

fn git_revision() -> Option<String> {
    // Rebuild when HEAD moves (a commit, a checkout), in a worktree too.
    for path in ["HEAD", "index"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned())
}

fn valid(r: &str) -> bool {
    (1..=64).contains(&r.len())
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
