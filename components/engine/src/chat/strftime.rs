//! `strftime_now(format)` for chat templates (Llama 3.x prints today's date with it).
//!
//! The engine has no time zone database (and none inside wasm), so times are UTC.

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Seconds since the Unix epoch now (0 if the clock is before it).
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Broken-down UTC time.
struct Tm {
    year: i64,
    month: u32, // 1..=12
    day: u32,   // 1..=31
    hour: u32,
    min: u32,
    sec: u32,
    weekday: usize, // 0 = Monday
    yday: u32,      // 1..=366
}

/// Howard Hinnant's `civil_from_days`.
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

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn gmtime(t: i64) -> Tm {
    // Clamp to a range where the arithmetic below cannot overflow (±1e15 s ≈ ±31 million years).
    let t = t.clamp(-1_000_000_000_000_000, 1_000_000_000_000_000);
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(month - 1) as usize] + day + u32::from(month > 2 && is_leap(year));
    Tm {
        year,
        month,
        day,
        hour: secs / 3600,
        min: secs / 60 % 60,
        sec: secs % 60,
        // 1970-01-01 was a Thursday (index 3).
        weekday: (days + 3).rem_euclid(7) as usize,
        yday,
    }
}

/// Formats the UTC time `t` (Unix seconds) with C `strftime` directives. Supports
/// `%a %A %b %B %h %d %e %H %I %j %m %M %p %S %y %Y %Z %z %F %T %D %n %t %%` and glibc's `%-d`-style
/// no-padding flag; anything else is copied through.
pub(crate) fn strftime(fmt: &str, t: i64) -> String {
    let tm = gmtime(t);
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let no_pad = chars.peek() == Some(&'-');
        if no_pad {
            chars.next();
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let num = |v: i64, w: usize| {
            if no_pad {
                v.to_string()
            } else {
                format!("{v:0w$}")
            }
        };
        let h12 = if tm.hour.is_multiple_of(12) {
            12
        } else {
            tm.hour % 12
        };
        let s = match d {
            'a' => DAYS[tm.weekday][..3].to_string(),
            'A' => DAYS[tm.weekday].to_string(),
            'b' | 'h' => MONTHS[(tm.month - 1) as usize][..3].to_string(),
            'B' => MONTHS[(tm.month - 1) as usize].to_string(),
            'd' => num(tm.day.into(), 2),
            'e' => format!("{:2}", tm.day),
            'H' => num(tm.hour.into(), 2),
            'I' => num(h12.into(), 2),
            'j' => num(tm.yday.into(), 3),
            'm' => num(tm.month.into(), 2),
            'M' => num(tm.min.into(), 2),
            'p' => (if tm.hour < 12 { "AM" } else { "PM" }).to_string(),
            'S' => num(tm.sec.into(), 2),
            'y' => num(tm.year.rem_euclid(100), 2),
            'Y' => tm.year.to_string(),
            'Z' => "UTC".to_string(),
            'z' => "+0000".to_string(),
            'F' => format!("{}-{:02}-{:02}", tm.year, tm.month, tm.day),
            'T' => format!("{:02}:{:02}:{:02}", tm.hour, tm.min, tm.sec),
            'D' => format!(
                "{:02}/{:02}/{:02}",
                tm.month,
                tm.day,
                tm.year.rem_euclid(100)
            ),
            'n' => "\n".to_string(),
            't' => "\t".to_string(),
            '%' => "%".to_string(),
            other => {
                let mut s = String::from('%');
                if no_pad {
                    s.push('-');
                }
                s.push(other);
                s
            }
        };
        out.push_str(&s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_c_strftime() {
        // 2024-07-23 14:05:09 UTC, a Tuesday (Llama 3.1's release day), day 205 of a leap year.
        let t = 1_721_743_509;
        assert_eq!(strftime("%d %b %Y", t), "23 Jul 2024");
        assert_eq!(
            strftime("%A %B %-d, %Y %H:%M:%S %p %j %y %e", t),
            "Tuesday July 23, 2024 14:05:09 PM 205 24 23"
        );
        assert_eq!(
            strftime("%F %T %Z %z %% %Q", t),
            "2024-07-23 14:05:09 UTC +0000 % %Q"
        );
        assert_eq!(strftime("%a %I", 0), "Thu 12");
        assert_eq!(strftime("%Y-%m-%d", -1), "1969-12-31");
        assert_eq!(strftime("%j", 951_782_400), "060"); // 2000-02-29
        assert_eq!(strftime("%d/%m/%Y", 4_107_542_400), "01/03/2100"); // 2100 is not leap
        assert_eq!(strftime("trailing %", 0), "trailing %");
        // Extreme values do not panic.
        let _ = strftime("%Y %j %a", i64::MAX);
        let _ = strftime("%Y %j %a", i64::MIN);
    }
}
