//! TLS 1.3 control traffic after the handshake (RFC 8446 §4.6, §6), as seen by whoever holds
//! the record keys once rustls is gone: the kernel (`ktls`) or gembok's record layer
//! (`records`). Both read the same handshake messages and alerts, and send the same ones.

/// Record content types.
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;

/// Alert descriptions we act on.
pub const CLOSE_NOTIFY: u8 = 0;
pub const USER_CANCELED: u8 = 90;
/// Our alerts: close_notify (warning), and a fatal internal_error.
pub const CLOSE_NOTIFY_ALERT: [u8; 2] = [1, CLOSE_NOTIFY];
pub const FATAL_INTERNAL_ERROR: [u8; 2] = [2, 80];

const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
/// Our KeyUpdate: handshake type 24, length 1, `update_not_requested`.
pub const KEY_UPDATE_NOT_REQUESTED: [u8; 5] = [KEY_UPDATE, 0, 0, 1, 0];

/// One handshake message after the handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// A session ticket: nothing is left to store it, so it is skipped (resumption is lost for
    /// that ticket, not correctness).
    NewSessionTicket,
    /// The peer's next record comes under its next key; `requested`: ours must follow.
    KeyUpdate { requested: bool },
}

/// A handshake record that cannot be followed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Truncated, empty, or a bad KeyUpdate body (decode_error).
    Malformed,
    /// A handshake message that has no place after the handshake (unexpected_message).
    Unexpected(u8),
}

/// The messages of one post-handshake record, in order (messages split across records are
/// refused as malformed: rustls and OpenSSL never split these).
pub fn messages(mut record: &[u8]) -> Result<Vec<Message>, Refused> {
    if record.is_empty() {
        return Err(Refused::Malformed);
    }
    let mut messages = Vec::new();
    while !record.is_empty() {
        let (message, rest) = parse_one(record)?;
        messages.push(message);
        record = rest;
    }
    Ok(messages)
}

fn parse_one(record: &[u8]) -> Result<(Message, &[u8]), Refused> {
    let [kind, a, b, c, rest @ ..] = record else {
        return Err(Refused::Malformed);
    };
    let len = usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c);
    if rest.len() < len {
        return Err(Refused::Malformed);
    }
    let (body, rest) = rest.split_at(len);
    let message = match (*kind, body) {
        (NEW_SESSION_TICKET, _) => Message::NewSessionTicket,
        (KEY_UPDATE, [0]) => Message::KeyUpdate { requested: false },
        (KEY_UPDATE, [1]) => Message::KeyUpdate { requested: true },
        (KEY_UPDATE, _) => return Err(Refused::Malformed),
        (other, _) => return Err(Refused::Unexpected(other)),
    };
    Ok((message, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_messages_in_one_record_are_read_in_order() {
        let mut record = vec![NEW_SESSION_TICKET, 0, 0, 3, 9, 9, 9];
        record.extend(KEY_UPDATE_NOT_REQUESTED);
        record.extend([KEY_UPDATE, 0, 0, 1, 1]);
        assert_eq!(
            messages(&record),
            Ok(vec![
                Message::NewSessionTicket,
                Message::KeyUpdate { requested: false },
                Message::KeyUpdate { requested: true },
            ])
        );
    }

    #[test]
    fn truncated_empty_or_out_of_place_messages_are_refused() {
        assert_eq!(messages(&[]), Err(Refused::Malformed));
        assert_eq!(messages(&[KEY_UPDATE, 0, 0, 2, 0]), Err(Refused::Malformed));
        assert_eq!(messages(&[KEY_UPDATE, 0, 0, 1, 2]), Err(Refused::Malformed));
        assert_eq!(messages(&[KEY_UPDATE, 0, 0]), Err(Refused::Malformed));
        // A Finished (20) after the handshake, even before a good KeyUpdate.
        let mut record = vec![20, 0, 0, 0];
        record.extend(KEY_UPDATE_NOT_REQUESTED);
        assert_eq!(messages(&record), Err(Refused::Unexpected(20)));
    }
}
