//! The one clock of the crate: the system time as Unix seconds (JWT `iat`/`exp`/`auth_time`,
//! store expiries, the rules' `now()`) or milliseconds (log timestamps).

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now; 0 if the system clock is before 1970.
pub fn unix_now() -> i64 {
    unix_seconds(SystemTime::now())
}

/// Unix milliseconds now; 0 if the system clock is before 1970.
pub fn unix_now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Unix seconds of `t` (a file's modification time, a load time); 0 before 1970.
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn seconds_and_millis_agree() {
        let (s, ms) = (unix_now(), unix_now_millis());
        assert!(s > 1_600_000_000, "{s}");
        assert!((ms / 1000 - s).abs() <= 1, "{s} {ms}");
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_millis(2_500)), 2);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
