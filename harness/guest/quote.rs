//! Quoting one word for a POSIX shell: the commands sent to the guest and the command
//! lines printed for a user (`--dry-run`, nix) share this one quoter.

/// Quote `s` for a POSIX shell: one word, no expansion. Words made only of safe bytes
/// stay bare; `#` is safe inside a word (`flake#attr`) but starts a comment at its head.
pub fn quote(s: &str) -> String {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"-_./=:@%+,#".contains(&b);
    if !s.is_empty() && !s.starts_with('#') && s.bytes().all(safe) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_leaves_plain_words_alone() {
        assert_eq!(quote("ssh.service"), "ssh.service");
        assert_eq!(quote("/etc/a-b_c"), "/etc/a-b_c");
        assert_eq!(
            quote("path:/x#nixosConfigurations.a"),
            "path:/x#nixosConfigurations.a"
        );
    }

    #[test]
    fn quote_wraps_everything_else() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(quote("dev-x\\x2dy.swap"), "'dev-x\\x2dy.swap'");
        // At a word's head `#` would start a comment.
        assert_eq!(quote("#x"), "'#x'");
    }

    /// A local POSIX shell reads every quoted word back as it was.
    #[test]
    fn a_shell_reads_back_each_word() {
        let words = [
            "#c",
            "a#b",
            "x y",
            "it's",
            "$HOME",
            "*",
            "",
            "~",
            "a=b",
            "back\\slash\nnl",
        ];
        let line = words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf '[%s]\\n' {line}")])
            .env("HOME", "/home/should-not-appear")
            .output()
            .unwrap();
        let expected: String = words.iter().map(|w| format!("[{w}]\n")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{line}");
    }
}
