//! Boot time as `systemd-analyze` (verb `time`) prints it. Pure.
//!
//! `Startup finished in 7.412s (kernel) + 13.011s (userspace) = 20.423s`
//! `multi-user.target reached after 12.9s in userspace.`

use serde::{Deserialize, Serialize};

/// Boot phases in microseconds, as systemd measured them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTime {
    /// Firmware phase (only on EFI with boot loader support).
    pub firmware_us: Option<u64>,
    /// Boot loader phase.
    pub loader_us: Option<u64>,
    /// Kernel until the initrd or PID 1 started.
    pub kernel_us: Option<u64>,
    /// Initrd phase.
    pub initrd_us: Option<u64>,
    /// PID 1 until the default target was reached.
    pub userspace_us: Option<u64>,
    /// Sum of the phases.
    pub total_us: u64,
    /// The default target and when it was reached (in userspace), when printed.
    pub reached: Option<TargetReached>,
}

/// The `X.target reached after T in userspace` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetReached {
    /// Target name.
    pub target: String,
    /// Microseconds after userspace started.
    pub after_us: u64,
}

/// Parse `systemd-analyze` output. `Ok(None)` when the boot has not finished yet
/// ("Bootup is not yet finished"); an error when the text has no recognisable line.
pub fn parse_boot_time(text: &str) -> anyhow::Result<Option<BootTime>> {
    if text.contains("Bootup is not yet finished") {
        return Ok(None);
    }
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Startup finished in "))
        .ok_or_else(|| {
            anyhow::anyhow!("systemd-analyze: no `Startup finished in` line in {text:?}")
        })?;
    let (phases, total) = line
        .rsplit_once(" = ")
        .ok_or_else(|| anyhow::anyhow!("systemd-analyze: no total in {line:?}"))?;
    let mut boot = BootTime {
        total_us: parse_timespan(total)?,
        ..BootTime::default()
    };
    for phase in phases.split(" + ") {
        let (span, label) = phase
            .trim()
            .strip_suffix(')')
            .and_then(|p| p.rsplit_once(" ("))
            .ok_or_else(|| anyhow::anyhow!("systemd-analyze: bad phase {phase:?}"))?;
        let us = Some(parse_timespan(span)?);
        match label {
            "firmware" => boot.firmware_us = us,
            "loader" => boot.loader_us = us,
            "kernel" => boot.kernel_us = us,
            "initrd" => boot.initrd_us = us,
            "userspace" => boot.userspace_us = us,
            _ => {} // newer phases (e.g. "softreboot") are not recorded
        }
    }
    boot.reached = text.lines().find_map(reached_line).transpose()?;
    Ok(Some(boot))
}

fn reached_line(line: &str) -> Option<anyhow::Result<TargetReached>> {
    let (target, rest) = line.trim().split_once(" reached after ")?;
    let span = rest.trim_end_matches('.').strip_suffix(" in userspace")?;
    Some(parse_timespan(span).map(|after_us| TargetReached {
        target: target.to_owned(),
        after_us,
    }))
}

/// Parse a systemd timespan such as `1min 2.345s`, `830ms` or `7.412s` into microseconds.
pub fn parse_timespan(text: &str) -> anyhow::Result<u64> {
    let mut total = 0f64;
    let mut any = false;
    for word in text.split_whitespace() {
        let split = word
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| anyhow::anyhow!("timespan {text:?}: {word:?} has no unit"))?;
        let (number, unit) = word.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| anyhow::anyhow!("timespan {text:?}: bad number in {word:?}"))?;
        let scale = match unit {
            "us" | "μs" | "µs" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "min" => 60e6,
            "h" => 3600e6,
            "d" => 86_400e6,
            "w" => 604_800e6,
            // systemd's month and year: 30.44 and 365.25 days.
            "M" | "month" => 2_629_800e6,
            "y" => 31_557_600e6,
            _ => anyhow::bail!("timespan {text:?}: unknown unit {unit:?}"),
        };
        total += number * scale;
        any = true;
    }
    if !any {
        anyhow::bail!("empty timespan");
    }
    Ok(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_in_every_unit() {
        assert_eq!(parse_timespan("7.412s").unwrap(), 7_412_000);
        assert_eq!(parse_timespan("830ms").unwrap(), 830_000);
        assert_eq!(parse_timespan("1min 2.345s").unwrap(), 62_345_000);
        assert_eq!(parse_timespan("1h 2min").unwrap(), 3_720_000_000);
        assert_eq!(parse_timespan("15us").unwrap(), 15);
        assert_eq!(parse_timespan("2w 1d").unwrap(), 15 * 86_400_000_000);
        assert_eq!(parse_timespan("1y 1month").unwrap(), 34_187_400_000_000);
        assert!(parse_timespan("12").is_err());
        assert!(parse_timespan("3 parsecs").is_err());
        assert!(parse_timespan("").is_err());
    }

    #[test]
    fn phases_with_initrd_and_target() {
        let text = "Startup finished in 2.1s (kernel) + 1.5s (initrd) + 1min 13.012s (userspace) = 1min 16.612s\n\
                    multi-user.target reached after 1min 12.9s in userspace.\n";
        let boot = parse_boot_time(text).unwrap().unwrap();
        assert_eq!(boot.kernel_us, Some(2_100_000));
        assert_eq!(boot.initrd_us, Some(1_500_000));
        assert_eq!(boot.userspace_us, Some(73_012_000));
        assert_eq!(boot.total_us, 76_612_000);
        assert_eq!(boot.firmware_us, None);
        let reached = boot.reached.unwrap();
        assert_eq!(
            (reached.target.as_str(), reached.after_us),
            ("multi-user.target", 72_900_000)
        );
    }

    #[test]
    fn unfinished_boot_is_none() {
        let text = "Bootup is not yet finished (org.freedesktop.systemd1.Manager.FinishTimestampMonotonic=0).\n\
                    Please try again later.\n";
        assert_eq!(parse_boot_time(text).unwrap(), None);
    }

    #[test]
    fn unrelated_text_is_an_error() {
        assert!(parse_boot_time("hello\n").is_err());
    }
}
