//! The wall clock as the harness records it: seconds since the Unix epoch.

/// Now, in seconds since the Unix epoch (0 on a clock before 1970).
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Now, in whole seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now() as u64
}
