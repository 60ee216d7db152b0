//! The mail queue on disk.
//!
//! [`layout`] is the manifest of queue directories with Postfix's owners and
//! modes; master creates the tree from it and `postfix check` verifies it.

pub mod layout;
