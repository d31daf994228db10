//! Records the git commit the binary is built from, for `tocsin --version`.
//! Outside a git checkout (a source tarball) it is `unknown`, unless
//! `TOCSIN_GIT_COMMIT` is set by whoever builds it.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TOCSIN_GIT_COMMIT");
    let commit = std::env::var("TOCSIN_GIT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    let commit = match commit {
        Some(c) if dirty => format!("{c}-modified"),
        Some(c) => c,
        None => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=TOCSIN_GIT_COMMIT={commit}");
    // Rebuilt when HEAD moves (a commit, a checkout).
    if let Ok(out) = Command::new("git").args(["rev-parse", "--git-dir"]).output() {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !dir.is_empty() {
            println!("cargo:rerun-if-changed={dir}/HEAD");
            println!("cargo:rerun-if-changed={dir}/index");
            if let Ok(head) = std::fs::read_to_string(format!("{dir}/HEAD")) {
                if let Some(r) = head.trim().strip_prefix("ref: ") {
                    println!("cargo:rerun-if-changed={dir}/{r}");
                }
            }
        }
    }
}
