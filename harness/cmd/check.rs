//! `coldboot check`: validate scenario and plan files without booting.

use std::path::PathBuf;

use coldboot::error::exit;
use coldboot::scenario::check_files;

/// Print one line per file; every problem names the file, line and column. Exit 2 if
/// any file is bad.
pub fn run(files: &[PathBuf]) -> anyhow::Result<i32> {
    let mut bad = 0;
    for check in check_files(files) {
        match &check.result {
            Ok(summary) => println!("ok   {}: {summary}", check.path.display()),
            Err(diags) => {
                bad += 1;
                for d in diags {
                    eprintln!("{d}");
                }
            }
        }
    }
    Ok(if bad == 0 { exit::OK } else { exit::USAGE })
}
