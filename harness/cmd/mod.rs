//! One module per subcommand. Each returns the process exit code or an error.
//!
//! Files:
//! - `analyze`: `coldboot analyze TARGET`
//! - `bench`: `coldboot bench`
//! - `boot`: `coldboot boot`
//! - `check`: `coldboot check`
//! - `compare`: `coldboot compare OLD NEW`
//! - `doctor`: `coldboot doctor`
//! - `gc`: `coldboot gc`
//! - `image`: `coldboot image build`
//! - `run`: `coldboot run`

pub mod analyze;
pub mod bench;
pub mod boot;
pub mod check;
pub mod compare;
pub mod doctor;
pub mod gc;
pub mod image;
pub mod run;

use std::path::Path;

/// Run `program args...` and return the first line of its stdout, or `None` if it is missing
/// or fails. Used to report tool versions.
pub async fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|_| out.status.success())
}

/// Free bytes on the filesystem holding `path` (or its nearest existing parent).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let mut p = path;
    loop {
        if p.exists() {
            let st = rustix::fs::statvfs(p).ok()?;
            return Some(st.f_bavail * st.f_frsize);
        }
        p = p.parent()?;
    }
}
