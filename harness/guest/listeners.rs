//! Which unit listens on which TCP port, read in the guest: the evidence of a boot's end
//! (`listeners-boot-N.txt`) and what the inference of undeclared waits matches refused
//! connections against.

use super::Guest;

/// Which unit listens on which TCP port at the end of a boot: `PORT UNIT PID` per
/// listening socket, from `/proc/net/tcp{,6}` and the processes' socket descriptors (one
/// `find` and one `awk`, no per-process command: each costs tens of ms under TCG).
pub async fn read(guest: &Guest) -> anyhow::Result<String> {
    const SCRIPT: &str = r#"find /proc/[0-9]*/fd -lname 'socket:*' -printf '%h %l
' 2>/dev/null | awk '
function listen(file,  l, f, a) {
    while ((getline l < file) > 0) {
        split(l, f, " ");
        if (f[4] == "0A") { split(f[2], a, ":"); port[f[10]] = a[length(a)] }
    }
    close(file)
}
BEGIN { listen("/proc/net/tcp"); listen("/proc/net/tcp6") }
{
    inode = $2; gsub(/[^0-9]/, "", inode)
    if (!(inode in port)) next
    split($1, p, "/"); pid = p[3]; cg = "-"; file = "/proc/" pid "/cgroup"
    while ((getline c < file) > 0) if (c ~ /^0::/) cg = substr(c, 4)
    close(file)
    print port[inode], pid, cg
}' | sort -u"#;
    let out = guest.exec(SCRIPT).await?;
    anyhow::ensure!(
        out.status == 0,
        "the listener read exited {}: {}",
        out.status,
        out.stderr.trim()
    );
    Ok(decimal(&out.stdout))
}

/// The script's `HEXPORT PID CGROUP` lines as `PORT UNIT PID` (ports in decimal, the
/// unit the last part of the cgroup path); lines that do not parse are left out.
pub fn decimal(stdout: &str) -> String {
    let mut text = String::new();
    for line in stdout.lines() {
        let mut w = line.splitn(3, ' ');
        let (Some(hex), Some(pid), Some(cgroup)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(hex, 16) else {
            continue;
        };
        let unit = cgroup.rsplit('/').next().unwrap_or("-");
        text.push_str(&format!("{port} {unit} {pid}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_in_decimal_with_their_unit() {
        let got = super::decimal(
            "1F92 412 /system.slice/traefik.service\n0016 300 /system.slice/ssh.service\nzz 1 /x\n",
        );
        assert_eq!(got, "8082 traefik.service 412\n22 ssh.service 300\n");
    }
}
