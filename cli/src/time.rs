//! Timestamps: RFC 3339 in UTC (written here, no date crate needed) and the
//! local wall-clock time of day.

const NS_PER_SEC: u64 = 1_000_000_000;

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2023-11-14T22:13:20.123456789Z`: UTC, always nine fractional digits.
pub fn rfc3339_utc(unix_ns: u64) -> String {
    let secs = unix_ns / NS_PER_SEC;
    let nanos = unix_ns % NS_PER_SEC;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Hours, minutes and seconds of the local time of day (UTC if the local
/// time zone cannot be read).
fn local_hms(unix_secs: u64) -> (u64, u64, u64) {
    let Ok(t) = libc::time_t::try_from(unix_secs) else {
        return utc_hms(unix_secs);
    };
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are
    // valid for the call, and localtime_r is thread-safe.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return utc_hms(unix_secs);
    }
    let field = |v: libc::c_int| u64::try_from(v).unwrap_or(0);
    (field(tm.tm_hour), field(tm.tm_min), field(tm.tm_sec))
}

fn utc_hms(unix_secs: u64) -> (u64, u64, u64) {
    let sod = unix_secs % 86_400;
    (sod / 3600, (sod / 60) % 60, sod % 60)
}

/// Local `HH:MM:SS.mmm`.
pub fn local_time_ms(unix_ns: u64) -> String {
    let (h, m, s) = local_hms(unix_ns / NS_PER_SEC);
    format!(
        "{h:02}:{m:02}:{s:02}.{:03}",
        (unix_ns % NS_PER_SEC) / 1_000_000
    )
}

/// Local `HH:MM:SS.uuuuuu`, as strace -t prints.
pub fn local_time_us(unix_ns: u64) -> String {
    let (h, m, s) = local_hms(unix_ns / NS_PER_SEC);
    format!("{h:02}:{m:02}:{s:02}.{:06}", (unix_ns % NS_PER_SEC) / 1_000)
}

/// Local `HH:MM:SS`.
pub fn local_time_s(unix_ns: u64) -> String {
    let (h, m, s) = local_hms(unix_ns / NS_PER_SEC);
    format!("{h:02}:{m:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_utc(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        // Leap day, and the last nanosecond of a year.
        assert_eq!(
            rfc3339_utc(951_782_400 * NS_PER_SEC),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_utc(1_704_067_200 * NS_PER_SEC - 1),
            "2023-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn local_times_have_fixed_shapes() {
        let ns = 1_700_000_000_123_456_789;
        let ms = local_time_ms(ns);
        assert_eq!(ms.len(), 12);
        assert!(ms.ends_with(".123"), "{ms}");
        assert!(local_time_us(ns).ends_with(".123456"));
        assert_eq!(local_time_s(ns).len(), 8);
    }
}
