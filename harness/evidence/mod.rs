//! The evidence bundle's top level: the reports rendered from the pairs' run folders.

use std::path::Path;

use serde::Serialize;

use crate::run::PairReport;
use crate::run::record::write_json;

/// Version of `report.json`'s shape; bump on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct ReportJson<'a> {
    schema_version: u32,
    harness_version: &'a str,
    pairs: &'a [PairReport],
}

/// Write the reports at the top of the bundle.
pub fn write_reports(bundle: &Path, reports: &[PairReport]) -> anyhow::Result<()> {
    write_json(
        &bundle.join("report.json"),
        &ReportJson {
            schema_version: SCHEMA_VERSION,
            harness_version: env!("CARGO_PKG_VERSION"),
            pairs: reports,
        },
    )
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time (UTC), for folder names.
pub fn utc_stamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        // 2026-11-28 05:34:26 UTC
        assert_eq!(utc_stamp(1_795_844_066), "20261128T053426Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    }
}
