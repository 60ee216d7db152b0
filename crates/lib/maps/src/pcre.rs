//! A compiled PCRE2 pattern, through the `pcre2-sys` bindings (the library
//! the `pcre2` crate wraps).
//!
//! The `pcre2` crate's builder cannot set the compile options pcre_table(5)
//! flags toggle (`A` anchored, `E` dollar-end-only, `U` ungreedy), so the
//! few library calls a table needs are made here directly: compile with
//! the options as bits, the capture and name counts, one match with its
//! group offsets, and PCRE2's own error texts (which Postfix logs as they
//! are). The system's libpcre2-8 is used when pkg-config finds it, else the
//! copy `pcre2-sys` builds.

use std::ptr::NonNull;

use pcre2_sys as sys;

pub(crate) use sys::{
    PCRE2_ANCHORED as ANCHORED, PCRE2_CASELESS as CASELESS, PCRE2_DOLLAR_ENDONLY as DOLLAR_ENDONLY,
    PCRE2_DOTALL as DOTALL, PCRE2_EXTENDED as EXTENDED, PCRE2_MULTILINE as MULTILINE,
    PCRE2_UNGREEDY as UNGREEDY,
};

/// A compiled pattern.
#[derive(Debug)]
pub(crate) struct Code(NonNull<sys::pcre2_code_8>);

// SAFETY: a compiled pcre2_code is never changed after pcre2_compile
// returns; PCRE2 documents it as safe to share between threads for
// matching, each match using its own match data (as `exec` does).
unsafe impl Send for Code {}
// SAFETY: as for Send.
unsafe impl Sync for Code {}

impl Drop for Code {
    fn drop(&mut self) {
        // SAFETY: the pointer came from pcre2_compile_8 and is freed once.
        unsafe { sys::pcre2_code_free_8(self.0.as_ptr()) }
    }
}

/// PCRE2's text for an error code.
fn message(code: i32) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; PCRE2 writes at most that
    // many code units, NUL included, and returns the length or a negative
    // code.
    let n = unsafe { sys::pcre2_get_error_message_8(code, buf.as_mut_ptr(), buf.len()) };
    match usize::try_from(n) {
        Ok(n) => String::from_utf8_lossy(&buf[..n.min(buf.len())]).into_owned(),
        Err(_) => format!("unknown PCRE2 error {code}"),
    }
}

impl Code {
    /// Compiles `pattern` with the option bits `options`; an error is the
    /// offset PCRE2 stopped at and its message.
    pub(crate) fn compile(pattern: &str, options: u32) -> Result<Self, (usize, String)> {
        let mut code = 0i32;
        let mut offset = 0usize;
        // SAFETY: the pattern pointer and length describe a live byte
        // slice; the out-parameters are valid; a null compile context
        // means the defaults.
        let p = unsafe {
            sys::pcre2_compile_8(
                pattern.as_ptr(),
                pattern.len(),
                options,
                &mut code,
                &mut offset,
                std::ptr::null_mut(),
            )
        };
        NonNull::new(p)
            .map(Self)
            .ok_or_else(|| (offset, message(code)))
    }

    /// How many capturing groups the pattern has.
    pub(crate) fn captures(&self) -> usize {
        let mut n: u32 = 0;
        // SAFETY: the capture count is a uint32_t, which `n` is.
        let rc = unsafe {
            sys::pcre2_pattern_info_8(
                self.0.as_ptr(),
                sys::PCRE2_INFO_CAPTURECOUNT,
                (&raw mut n).cast::<libc::c_void>(),
            )
        };
        if rc == 0 {
            n as usize
        } else {
            0
        }
    }

    /// Matches `subject`: the span of the match and of each group (`None`
    /// for a group that took no part), nothing when there is no match, or
    /// PCRE2's message for a failed match (a resource limit).
    #[allow(clippy::type_complexity)]
    pub(crate) fn exec(
        &self,
        subject: &[u8],
    ) -> Result<Option<Vec<Option<(usize, usize)>>>, String> {
        // SAFETY: the code is valid; a null general context means malloc.
        let md = unsafe {
            sys::pcre2_match_data_create_from_pattern_8(self.0.as_ptr(), std::ptr::null_mut())
        };
        let Some(md) = NonNull::new(md) else {
            return Err("out of memory".to_owned());
        };
        // SAFETY: code, subject slice and match data are valid for the call;
        // a null match context means the defaults.
        let rc = unsafe {
            sys::pcre2_match_8(
                self.0.as_ptr(),
                subject.as_ptr(),
                subject.len(),
                0,
                0,
                md.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        let result = if rc == sys::PCRE2_ERROR_NOMATCH {
            Ok(None)
        } else if rc < 0 {
            Err(message(rc))
        } else {
            let groups = self.captures() + 1;
            // SAFETY: match data made from this pattern has room for every
            // group's pair of offsets, which pcre2_match_8 filled in (unset
            // groups as PCRE2_UNSET).
            let ov = unsafe {
                std::slice::from_raw_parts(
                    sys::pcre2_get_ovector_pointer_8(md.as_ptr()),
                    2 * groups,
                )
            };
            let set = usize::try_from(rc).unwrap_or(0);
            Ok(Some(
                (0..groups)
                    .map(|g| {
                        let (s, e) = (ov[2 * g], ov[2 * g + 1]);
                        (g < set && s != usize::MAX && s <= e && e <= subject.len())
                            .then_some((s, e))
                    })
                    .collect(),
            ))
        };
        // SAFETY: made above, freed once.
        unsafe { sys::pcre2_match_data_free_8(md.as_ptr()) };
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_matches_and_reports_groups() {
        let c = Code::compile("^(a)(x)?(b+)", CASELESS).unwrap();
        assert_eq!(c.captures(), 3);
        let m = c.exec(b"ABBc").unwrap().unwrap();
        assert_eq!(m, vec![Some((0, 3)), Some((0, 1)), None, Some((1, 3))]);
        assert_eq!(c.exec(b"zz").unwrap(), None);
    }

    #[test]
    fn options_postfix_flags_need_are_honoured() {
        let anchored = Code::compile("b", ANCHORED).unwrap();
        assert_eq!(anchored.exec(b"ab").unwrap(), None);
        let endonly = Code::compile("a$", DOLLAR_ENDONLY).unwrap();
        assert_eq!(endonly.exec(b"a\n").unwrap(), None);
        let ungreedy = Code::compile("a+", UNGREEDY).unwrap();
        assert_eq!(ungreedy.exec(b"aaa").unwrap().unwrap()[0], Some((0, 1)));
    }

    #[test]
    fn compile_errors_carry_offset_and_message() {
        let (off, msg) = Code::compile("a(b", 0).unwrap_err();
        assert_eq!(off, 3);
        assert_eq!(msg, "missing closing parenthesis");
    }
}
