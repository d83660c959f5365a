//! Human units in policy files: durations (`500ms`, `10s`, `15m`, `2h`, `1d`), sizes (`64KiB`,
//! `1MiB`, plain bytes) and calendar dates (`2027-06-30`).

use std::time::Duration;

/// Parses `N` followed by `ms`, `s`, `m`, `h` or `d`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 500ms, 10s, 15m, 2h, 1d"))?;
    let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs);
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    };
    d.ok_or_else(|| format!("`{s}` is not a duration such as 500ms, 10s, 15m, 2h, 1d"))
}

/// Parses a byte count: `N`, `NKiB`, `NMiB`, `NGiB` (also `KB`/`MB` as binary multiples).
pub fn size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 16384, 64KiB, 1MiB"))?;
    let k = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "k" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        _ => return Err(format!("`{s}` is not a size such as 16384, 64KiB, 1MiB")),
    };
    n.checked_mul(k)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Parses a count: a whole number, without a unit.
pub fn count(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` is not a whole number"));
    }
    s.parse().map_err(|_| format!("`{s}` is too large"))
}

/// A calendar date `YYYY-MM-DD`, as seconds since the Unix epoch at 00:00:00 UTC.
pub fn date(s: &str) -> Result<i64, String> {
    let bad = || format!("`{s}` is not a date such as 2027-06-30");
    let mut it = s.trim().splitn(3, '-');
    let (y, m, d) = (
        it.next().ok_or_else(bad)?,
        it.next().ok_or_else(bad)?,
        it.next().ok_or_else(bad)?,
    );
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month[(m - 1) as usize] {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * 86_400)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An IMF-fixdate (RFC 9110) for seconds since the epoch, as `Sunset` wants.
pub fn http_date(epoch: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(duration("15 minutes").is_err());
        assert!(duration("-1s").is_err());
        assert!(duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("16384"), Ok(16384));
        assert_eq!(size("64KiB"), Ok(65536));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert!(size("1PB").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(date("1970-01-01"), Ok(0));
        assert_eq!(date("2026-01-01"), Ok(1_767_225_600));
        assert_eq!(
            http_date(date("2027-06-30").expect("valid")),
            "Wed, 30 Jun 2027 00:00:00 GMT"
        );
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert!(date("2027-02-29").is_err());
        assert!(date("2028-02-29").is_ok());
        assert!(date("27-6-30").is_err());
    }
}
