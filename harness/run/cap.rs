//! Size caps on evidence files a guest can make arbitrarily large, so a guest that
//! floods its journal (or console, see [`crate::vm::console::SERIAL_LOG_CAP`]) cannot
//! fill the evidence disk or the harness's memory. A cut is marked in the file itself.

/// The most of a boot's journal that `journal-boot-N.json` keeps: its first entries
/// (the boot's start, which ordering questions are about), whole entries only.
pub const JOURNAL_CAP: usize = 8 * 1024 * 1024;

/// The guest command that prints the boot's journal as JSON lines, stopping one byte
/// past `cap` (so the transfer is bounded too, and a cut can be seen).
pub fn journal_command(cap: usize) -> String {
    format!("journalctl -b -o json --no-pager | head -c {}", cap + 1)
}

/// The guest command that prints the journal entries logged after `cursor` as JSON
/// lines, stopping one byte past `cap`.
pub fn journal_after_command(cursor: &str, cap: usize) -> String {
    format!(
        "journalctl -b -o json --no-pager --after-cursor={} | head -c {}",
        crate::guest::shell::quote(cursor),
        cap + 1
    )
}

/// The `__CURSOR` of the last entry of `journalctl -o json` output, if it has one.
pub fn last_cursor(text: &str) -> Option<String> {
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let entry: serde_json::Value = serde_json::from_str(last).ok()?;
    entry.get("__CURSOR")?.as_str().map(str::to_string)
}

/// Cut `text` (JSON lines) to at most `cap` bytes of whole lines, and when it was cut,
/// end it with one JSON line that says so (readers of JSON lines still parse every
/// line). Returns whether it was cut.
pub fn cut_json_lines(text: &mut String, cap: usize) -> bool {
    if text.len() <= cap {
        return false;
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let end = text[..end].rfind('\n').map_or(0, |i| i + 1);
    text.truncate(end);
    let note = serde_json::json!({
        "COLDBOOT_CUT": format!(
            "the journal reached the evidence cap of {} MiB here; later entries were not kept",
            cap / (1024 * 1024)
        )
    });
    text.push_str(&note.to_string());
    text.push('\n');
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_starts_after_the_last_entry_read() {
        let text = "{\"__CURSOR\":\"s=a;i=1\",\"MESSAGE\":\"x\"}\n{\"__CURSOR\":\"s=a;i=2\",\"MESSAGE\":\"y\"}\n";
        assert_eq!(last_cursor(text).as_deref(), Some("s=a;i=2"));
        assert_eq!(last_cursor(""), None);
        assert_eq!(last_cursor("{\"MESSAGE\":\"no cursor\"}\n"), None);
        assert_eq!(
            journal_after_command("s=a;i=2", 10),
            "journalctl -b -o json --no-pager --after-cursor='s=a;i=2' | head -c 11"
        );
    }

    #[test]
    fn a_journal_under_the_cap_is_kept_whole() {
        let mut t = "{\"a\":1}\n{\"b\":2}\n".to_string();
        assert!(!cut_json_lines(&mut t, 100));
        assert_eq!(t, "{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn a_journal_over_the_cap_keeps_whole_entries_and_says_where_it_was_cut() {
        let line = "{\"MESSAGE\":\"flood\"}\n";
        let mut t = line.repeat(10);
        assert!(cut_json_lines(&mut t, 3 * line.len() + 5));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[..3].iter().all(|l| *l == line.trim_end()));
        let cut: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
        assert!(
            cut["COLDBOOT_CUT"]
                .as_str()
                .unwrap()
                .contains("evidence cap")
        );
    }
}
