//! What arrives on qmgr's trigger socket: single request bytes (`I`, `F`,
//! `D`, master's `W`) and cleanup's `N` + queue ID + newline.

use pfx_ipc::proto::trigger;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// A request byte.
    Byte(u8),
    /// cleanup committed this message to `incoming/`.
    New(String),
}

/// Longer than any queue ID: an `N` request this long without its newline
/// is not one.
const MAX_TRIGGER_ID: usize = 64;

/// The requests at the start of `bytes`, and how many bytes they took. An
/// `N` still waiting for its newline is left for the next read unless the
/// client has `closed`; one that does not parse asks for a scan of
/// `incoming/`.
pub(crate) fn parse(bytes: &[u8], closed: bool) -> (Vec<Request>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    while let Some(&b) = bytes.get(used) {
        if b != trigger::NEW {
            out.push(Request::Byte(b));
            used += 1;
            continue;
        }
        let rest = &bytes[used + 1..];
        let Some(end) = rest.iter().position(|&c| c == b'\n') else {
            if closed || rest.len() > MAX_TRIGGER_ID {
                out.push(Request::Byte(trigger::INCOMING));
                used = bytes.len();
            }
            break;
        };
        match std::str::from_utf8(&rest[..end]) {
            Ok(id) if pfx_queue::is_queue_id(id) => out.push(Request::New(id.to_owned())),
            _ => out.push(Request::Byte(trigger::INCOMING)),
        }
        used += end + 2;
    }
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(requests: &[Request]) -> Vec<String> {
        requests
            .iter()
            .map(|r| match r {
                Request::New(id) => format!("N{id}"),
                Request::Byte(b) => char::from(*b).to_string(),
            })
            .collect()
    }

    #[test]
    fn trigger_requests_in_a_stream() {
        // cleanup's connection: several requests in one read.
        let (ev, used) = parse(b"N3F1A2B4C5D\nIN3F1A2B4C5E\n", false);
        assert_eq!(ids(&ev), ["N3F1A2B4C5D", "I", "N3F1A2B4C5E"]);
        assert_eq!(used, 25);
        // A request the read cut short waits for the rest...
        let (ev, used) = parse(b"WN3F1A2", false);
        assert_eq!((ids(&ev), used), (vec!["W".to_owned()], 1));
        let (ev, used) = parse(b"N3F1A2B4C5D\n", false);
        assert_eq!((ids(&ev), used), (vec!["N3F1A2B4C5D".to_owned()], 12));
        // ...unless the client has gone, or it is no queue ID.
        let (ev, used) = parse(b"N3F1A2", true);
        assert_eq!((ids(&ev), used), (vec!["I".to_owned()], 6));
        let long = [b"N".as_slice(), &[b'A'; 80]].concat();
        let (ev, used) = parse(&long, false);
        assert_eq!((ids(&ev), used), (vec!["I".to_owned()], 81));
        let (ev, used) = parse(b"N../../etc\nF", false);
        assert_eq!((ids(&ev), used), (vec!["I".to_owned(), "F".to_owned()], 12));
    }
}
