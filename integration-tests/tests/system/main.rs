//! Black-box tests of postfix-rs: each builds a throw-away instance with
//! testkit and checks it from outside, through the commands, sockets, the
//! mail log and /proc.

mod addressing;
mod chunking;
mod content;
mod crash;
mod debianstock;
mod dsn;
mod durability;
mod failclosed;
mod filters;
mod fleet;
mod lifecycle;
mod lmtp;
mod local_agent;
mod mailpath;
mod maps;
mod milters;
mod named;
mod named_recursion;
mod named_vs_bind;
mod pipe;
mod policy;
mod postconf;
mod privileges;
mod qshape;
mod queueinterop;
mod queuetools;
mod ratelimit;
mod relay;
mod rndc;
mod sidebyside;
mod sqltables;
mod tls;
mod tlsrelay;
mod virtual_agent;
mod virtualhosting;
mod zonetransfer;
