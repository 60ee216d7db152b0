//! Dates as Postfix writes them, in local time with the zone's abbreviation.

use std::time::{SystemTime, UNIX_EPOCH};

fn strftime(t: SystemTime, fmt: &std::ffi::CStr) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as libc::time_t;
    // SAFETY: localtime_r and strftime write into buffers we own.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return String::new();
        }
        let mut buf = [0u8; 128];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// RFC 5322 date as in Postfix's headers: `Wed, 25 Nov 2026 02:07:44 +0000 (UTC)`.
pub fn rfc2822(t: SystemTime) -> String {
    strftime(t, c"%a, %e %b %Y %H:%M:%S %z (%Z)")
}

/// `asctime()` form without the newline: `Wed Nov 25 02:07:44 2026` (mbox
/// `From ` lines, `postqueue -p`).
pub fn asctime(t: SystemTime) -> String {
    strftime(t, c"%a %b %e %H:%M:%S %Y")
}

/// `Dec  4 16:43:20`, as in syslog lines and Postfix's `$localtime`.
pub fn log_stamp(t: SystemTime) -> String {
    strftime(t, c"%b %e %H:%M:%S")
}

/// `YYYYMMDDhhmmss`, the start of Postfix's Message-ID.
pub fn compact(t: SystemTime) -> String {
    strftime(t, c"%Y%m%d%H%M%S")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_have_postfix_shape() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_572_464);
        let d = rfc2822(t);
        assert!(
            d.len() >= 31 && d.contains(" 2026 ") && d.ends_with(')'),
            "{d}"
        );
        assert_eq!(compact(t).len(), 14);
        assert_eq!(log_stamp(t).len(), 15);
        assert_eq!(asctime(t).len(), 24);
    }
}
