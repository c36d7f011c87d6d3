//! Records the git revision for `ml_api_build_info` (left "unknown" outside a git checkout).
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ML_API_GIT_REVISION");
    // A container build has no .git: it passes the revision in (`--build-arg REVISION`).
    if let Some(revision) = std::env::var("ML_API_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
    {
        println!("cargo:rustc-env=ML_API_GIT_REVISION={revision}");
        return;
    }
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ML_API_GIT_REVISION={revision}");
    // Watch the checkout only where there is one: a missing path would rebuild every time.
    for path in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
