//! Time as the runtime sees it: milliseconds since the Unix epoch, read from a [`Clock`] port so a
//! test can run a seven-day timer in microseconds.
//!
//! [`Clock`]: crate::ports::Clock

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    pub fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    pub fn plus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// How long from `self` until `later`, zero if `later` is not later.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC), as [`Timestamp`]'s `Display` and EventBridge
    /// Scheduler's `<aws.scheduler.scheduled-time>` write it.
    pub fn parse_utc(text: &str) -> Option<Self> {
        let text = text.strip_suffix('Z')?;
        let (date, time) = text.split_once('T')?;
        let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
        let (y, m, d) = (date.next()??, date.next()??, date.next()??);
        let (hms, fraction) = match time.split_once('.') {
            Some((hms, f)) => (hms, f),
            None => (time, ""),
        };
        let mut hms = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
        let (hh, mm, ss) = (hms.next()??, hms.next()??, hms.next()??);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        let millis = match fraction {
            "" => 0,
            f if f.bytes().all(|b| b.is_ascii_digit()) => {
                let padded = format!("{f:0<3}");
                padded[..3].parse::<u64>().ok()?
            }
            _ => return None,
        };
        let days = u64::try_from(days_from_civil(y, m as u32, d as u32)).ok()?;
        Some(Self(
            (days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000 + millis,
        ))
    }

    /// The wall clock of this machine.
    pub fn now_utc() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-26T07:00:00.000Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            self.0 % 1000
        )
    }
}

/// Howard Hinnant's civil-to-days algorithm: days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_676_400_123).to_string(),
            "2026-11-26T07:00:00.123Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn parses_what_it_formats_and_schedulers_times() {
        for t in [0, 951_782_400_000, 1_795_676_400_123, 4_102_444_800_000] {
            let text = Timestamp(t).to_string();
            assert_eq!(Timestamp::parse_utc(&text), Some(Timestamp(t)), "{text}");
        }
        assert_eq!(
            Timestamp::parse_utc("2026-11-26T07:00:00Z"),
            Some(Timestamp(1_795_676_400_000))
        );
        for bad in [
            "2026-11-26 07:00:00Z",
            "2026-13-01T00:00:00Z",
            "soon",
            "2026-11-26T07:00:00",
        ] {
            assert_eq!(Timestamp::parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp(1_000);
        assert_eq!(t.plus(Duration::from_secs(2)), Timestamp(3_000));
        assert_eq!(Timestamp(3_000).until(t), Duration::ZERO);
        assert_eq!(t.until(Timestamp(3_000)), Duration::from_secs(2));
    }
}
