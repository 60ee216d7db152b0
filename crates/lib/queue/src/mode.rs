//! What a queue file's mode says. Postfix's readiness bit (owner execute)
//! marks a complete file, set right before the fsync that commits it;
//! postfix-rs also gives files cleanup named ahead of time (crate::reserve)
//! a mode of their own. The writer, the reader and the reserve all go by
//! these, so they live apart from each of them.

/// The readiness bit: a complete queue file is 0700, an incomplete one 0600.
pub(crate) const MODE_COMPLETE: u32 = 0o700;
pub(crate) const MODE_WRITING: u32 = 0o600;
/// Postfix's forced-expiration bit (group execute, `postsuper -e`): qmgr
/// returns the message to its sender at its next delivery attempt.
pub(crate) const MODE_EXPIRE: u32 = 0o010;
/// A file cleanup named ahead of time and has not started (crate::reserve).
pub(crate) const MODE_RESERVED: u32 = 0o400;
/// Maildrop files, as Postfix's postdrop makes them: owned by the
/// submitting user, readable for pickup, owner-execute when complete.
pub(crate) const MODE_DROP_WRITING: u32 = 0o644;
pub(crate) const MODE_DROP_COMPLETE: u32 = 0o744;

/// What a file in a queue directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// A message (the readiness bit is set).
    Complete,
    /// Named ahead of time by cleanup, not started (see crate::reserve):
    /// not a message, and not left over from a crash.
    Reserved,
    /// Being written, or left so by a crash: never acknowledged.
    Incomplete,
}

impl Readiness {
    /// What a file with permission bits `mode` is.
    pub(crate) fn of(mode: u32) -> Self {
        if mode & 0o100 != 0 {
            Self::Complete
        } else if mode & 0o777 == MODE_RESERVED {
            Self::Reserved
        } else {
            Self::Incomplete
        }
    }
}
