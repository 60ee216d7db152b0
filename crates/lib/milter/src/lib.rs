//! Postfix's milter client: the Sendmail milter protocol as Postfix speaks
//! it (versions 2, 3, 4 and 6), one session per SMTP connection with each
//! configured milter, Postfix's timeouts and `milter_default_action`, and
//! the edits milters ask for at the end of a message.

pub mod config;
pub mod edit;
pub mod session;
pub mod wire;

pub use config::{Config, Milters};
pub use edit::{EnvelopeEdit, Message};
pub use session::{Client, Session, Verdict};
pub use wire::Family;
