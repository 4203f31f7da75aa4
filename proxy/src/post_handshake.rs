//! TLS 1.3 control traffic after the handshake (RFC 8446 §4.6, §6), as seen by whoever holds
//! the record keys once rustls is gone: the kernel (`ktls`) or gembok's record layer
//! (`records`). Both read the same handshake messages and alerts, and send the same ones.

/// Record content types.
pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
/// Outer content type of every protected TLS 1.3 record, and the inner type of application data.
pub const APPLICATION_DATA: u8 = 23;

/// Alert descriptions (RFC 8446 §6): the peer's we act on, and the fatal ones we send.
pub const CLOSE_NOTIFY: u8 = 0;
pub const UNEXPECTED_MESSAGE: u8 = 10;
pub const BAD_RECORD_MAC: u8 = 20;
pub const RECORD_OVERFLOW: u8 = 22;
pub const DECODE_ERROR: u8 = 50;
pub const INTERNAL_ERROR: u8 = 80;
pub const USER_CANCELED: u8 = 90;
/// The alerts by which a TLS 1.3 server refuses a client's certificate: bad_certificate,
/// unsupported_certificate, certificate_revoked, certificate_expired, certificate_unknown,
/// unknown_ca, access_denied, certificate_required. The client reads them only after its own
/// handshake is complete (RFC 8446 §4.4.2.4: the server checks the certificate once the
/// client's Finished has arrived).
pub const CERTIFICATE_REFUSALS: [u8; 8] = [42, 43, 44, 45, 46, 48, 49, 116];
/// Our close_notify (level warning).
pub const CLOSE_NOTIFY_ALERT: [u8; 2] = [1, CLOSE_NOTIFY];

/// The body of a fatal alert (level 2) with `description`.
pub const fn fatal_alert(description: u8) -> [u8; 2] {
    [2, description]
}

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

/// The largest handshake message we join (rustls' own limit): a NewSessionTicket is the only
/// one that can be long, and no peer sends one near this size.
pub const MAX_MESSAGE: usize = 0xffff;

/// Handshake records that cannot be followed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// An empty record, or a bad KeyUpdate body (decode_error).
    #[error("malformed TLS handshake message after the handshake")]
    Malformed,
    /// A message longer than we join (decode_error).
    #[error("TLS handshake message of {0} bytes after the handshake (at most {MAX_MESSAGE})")]
    TooLarge(usize),
    /// A handshake message that has no place after the handshake (unexpected_message).
    #[error("unexpected TLS handshake message type {0} after the handshake")]
    Unexpected(u8),
    /// Bytes after a KeyUpdate in its record: they would be under the old key (unexpected_message).
    #[error("a TLS KeyUpdate did not end its record")]
    Misaligned,
    /// Another record type, or the end, inside a handshake message split across records
    /// (unexpected_message).
    #[error("a TLS handshake message split across records was interrupted")]
    Interrupted,
}

impl Refused {
    /// The fatal alert the peer is owed.
    pub fn alert(&self) -> u8 {
        match self {
            Refused::Malformed | Refused::TooLarge(_) => DECODE_ERROR,
            Refused::Unexpected(_) | Refused::Misaligned | Refused::Interrupted => {
                UNEXPECTED_MESSAGE
            }
        }
    }

    /// A short label for metrics (the streams' `reason` labels).
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Malformed | Refused::TooLarge(_) => "malformed",
            Refused::Unexpected(_) | Refused::Misaligned | Refused::Interrupted => {
                "unexpected_record"
            }
        }
    }
}

/// The handshake messages of the records after the handshake, joined across records (RFC 8446
/// §5.1): a message may be split over several handshake records with no other record type in
/// between, and a KeyUpdate must end its record, since the next record comes under the next key.
/// Nothing is held unless a message is split (rustls and OpenSSL never split these).
#[derive(Debug, Default)]
pub struct Joiner {
    /// The start of a message whose end has not arrived yet.
    partial: Vec<u8>,
    /// A server's peer is a client, which never sends NewSessionTicket (RFC 8446 §4.6.1).
    server: bool,
}

impl Joiner {
    /// The joiner of one side of a connection.
    pub fn new(server: bool) -> Self {
        Self {
            partial: Vec::new(),
            server,
        }
    }

    /// The messages one handshake record completes, in order. A message split into many
    /// records is gathered in place: each record is copied once, whatever the split.
    pub fn feed(&mut self, record: &[u8]) -> Result<Vec<Message>, Refused> {
        if record.is_empty() {
            return Err(Refused::Malformed); // zero-length handshake fragments are forbidden
        }
        if self.partial.is_empty() {
            let (messages, rest) = self.parse_all(record)?;
            self.partial.extend_from_slice(rest);
            return Ok(messages);
        }
        self.partial.extend_from_slice(record);
        let partial = std::mem::take(&mut self.partial);
        let (messages, rest) = self.parse_all(&partial)?;
        let done = partial.len() - rest.len();
        self.partial = partial;
        self.partial.drain(..done);
        Ok(messages)
    }

    /// Every whole message at the start of `bytes`, and what is left (the start of the next).
    /// Checking whether a message is whole reads only its header.
    fn parse_all<'b>(&self, mut bytes: &'b [u8]) -> Result<(Vec<Message>, &'b [u8]), Refused> {
        let mut messages = Vec::new();
        while !bytes.is_empty() {
            if self.server && bytes[0] == NEW_SESSION_TICKET {
                return Err(Refused::Unexpected(NEW_SESSION_TICKET));
            }
            let Some((message, rest)) = parse_one(bytes)? else {
                break;
            };
            if matches!(message, Message::KeyUpdate { .. }) && !rest.is_empty() {
                return Err(Refused::Misaligned);
            }
            messages.push(message);
            bytes = rest;
        }
        Ok((messages, bytes))
    }

    /// Checks that no message is waiting for its end: call it on any other record type and on
    /// close_notify.
    pub fn expect_none(&self) -> Result<(), Refused> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(Refused::Interrupted)
        }
    }
}

/// The first message of `bytes` and what follows it, or `None` if its end is still to come.
/// A message is refused as soon as its header shows it cannot be followed.
fn parse_one(bytes: &[u8]) -> Result<Option<(Message, &[u8])>, Refused> {
    let Some(&kind) = bytes.first() else {
        return Ok(None);
    };
    if kind != NEW_SESSION_TICKET && kind != KEY_UPDATE {
        return Err(Refused::Unexpected(kind));
    }
    let [_, a, b, c, rest @ ..] = bytes else {
        return Ok(None);
    };
    let len = usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c);
    if len > MAX_MESSAGE {
        return Err(Refused::TooLarge(len));
    }
    if kind == KEY_UPDATE && len != 1 {
        return Err(Refused::Malformed);
    }
    if rest.len() < len {
        return Ok(None);
    }
    let (body, rest) = rest.split_at(len);
    let message = match (kind, body) {
        (KEY_UPDATE, [0]) => Message::KeyUpdate { requested: false },
        (KEY_UPDATE, [1]) => Message::KeyUpdate { requested: true },
        (KEY_UPDATE, _) => return Err(Refused::Malformed),
        _ => Message::NewSessionTicket,
    };
    Ok(Some((message, rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICKET: [u8; 7] = [NEW_SESSION_TICKET, 0, 0, 3, 9, 9, 9];
    const KEY_UPDATE_REQUESTED: [u8; 5] = [KEY_UPDATE, 0, 0, 1, 1];

    fn one_record(record: &[u8]) -> Result<Vec<Message>, Refused> {
        Joiner::default().feed(record)
    }

    #[test]
    fn messages_of_one_record_are_read_in_order_up_to_a_key_update() {
        let record = [&TICKET[..], &TICKET, &KEY_UPDATE_REQUESTED].concat();
        assert_eq!(
            one_record(&record),
            Ok(vec![
                Message::NewSessionTicket,
                Message::NewSessionTicket,
                Message::KeyUpdate { requested: true },
            ])
        );
        assert_eq!(
            one_record(&KEY_UPDATE_NOT_REQUESTED),
            Ok(vec![Message::KeyUpdate { requested: false }])
        );
    }

    #[test]
    fn a_message_split_across_records_is_joined() {
        // A ticket cut after its type, then inside its length, then inside its body, followed in
        // the last record by a KeyUpdate cut after its header.
        let wire = [&TICKET[..], &KEY_UPDATE_REQUESTED].concat();
        let mut joiner = Joiner::default();
        for cut in [&wire[..1], &wire[1..3], &wire[3..5]] {
            assert_eq!(joiner.feed(cut), Ok(vec![]));
            assert_eq!(joiner.expect_none(), Err(Refused::Interrupted));
        }
        assert_eq!(
            joiner.feed(&wire[5..11]),
            Ok(vec![Message::NewSessionTicket])
        );
        assert_eq!(joiner.expect_none(), Err(Refused::Interrupted));
        assert_eq!(
            joiner.feed(&wire[11..]),
            Ok(vec![Message::KeyUpdate { requested: true }])
        );
        assert_eq!(joiner.expect_none(), Ok(()));
    }

    /// Correctness only: that each fragment is copied once is by construction (`feed` extends
    /// `partial` in place), not something this test can see.
    #[test]
    fn a_largest_ticket_sent_a_byte_per_record_is_joined() {
        let mut ticket = vec![NEW_SESSION_TICKET, 0, 0xff, 0xff];
        ticket.resize(4 + 0xffff, 7);
        let mut joiner = Joiner::default();
        let (last, head) = ticket.split_last().unwrap();
        for byte in head {
            assert_eq!(joiner.feed(std::slice::from_ref(byte)), Ok(vec![]));
        }
        assert_eq!(
            joiner.feed(std::slice::from_ref(last)),
            Ok(vec![Message::NewSessionTicket])
        );
        assert_eq!(joiner.expect_none(), Ok(()));
    }

    #[test]
    fn a_server_refuses_a_ticket_from_its_client() {
        let mut server = Joiner::new(true);
        assert_eq!(
            server.feed(&TICKET),
            Err(Refused::Unexpected(NEW_SESSION_TICKET))
        );
        // Split: refused from its first byte.
        assert_eq!(
            Joiner::new(true).feed(&TICKET[..1]),
            Err(Refused::Unexpected(NEW_SESSION_TICKET))
        );
        assert_eq!(
            Joiner::new(true).feed(&KEY_UPDATE_REQUESTED),
            Ok(vec![Message::KeyUpdate { requested: true }])
        );
        assert_eq!(
            Joiner::new(false).feed(&TICKET),
            Ok(vec![Message::NewSessionTicket])
        );
    }

    #[test]
    fn a_key_update_must_end_its_record() {
        let record = [&KEY_UPDATE_NOT_REQUESTED[..], &TICKET].concat();
        assert_eq!(one_record(&record), Err(Refused::Misaligned));
        // Even when what follows is only the start of a message.
        let record = [&KEY_UPDATE_NOT_REQUESTED[..], &[NEW_SESSION_TICKET]].concat();
        assert_eq!(one_record(&record), Err(Refused::Misaligned));
    }

    #[test]
    fn bad_or_out_of_place_messages_are_refused_from_their_header() {
        assert_eq!(one_record(&[]), Err(Refused::Malformed));
        assert_eq!(
            one_record(&[KEY_UPDATE, 0, 0, 2, 0]),
            Err(Refused::Malformed)
        );
        assert_eq!(
            one_record(&[KEY_UPDATE, 0, 0, 1, 2]),
            Err(Refused::Malformed)
        );
        // A KeyUpdate whose length is wrong is refused before its body comes.
        assert_eq!(one_record(&[KEY_UPDATE, 0, 0, 9]), Err(Refused::Malformed));
        // A Finished (20) after the handshake, even before a good KeyUpdate, and as soon as its
        // type is seen.
        let record = [&[20, 0, 0, 0][..], &KEY_UPDATE_NOT_REQUESTED].concat();
        assert_eq!(one_record(&record), Err(Refused::Unexpected(20)));
        assert_eq!(one_record(&[20]), Err(Refused::Unexpected(20)));
        // A ticket longer than we join, refused from its length alone.
        assert_eq!(
            one_record(&[NEW_SESSION_TICKET, 1, 0, 0]),
            Err(Refused::TooLarge(0x10000))
        );
        let mut joiner = Joiner::default();
        assert_eq!(joiner.feed(&[NEW_SESSION_TICKET, 0, 0xff]), Ok(vec![]));
        assert_eq!(joiner.feed(&[0xff]), Ok(vec![])); // exactly the limit: joined
    }

    #[test]
    fn refusals_map_to_their_alerts() {
        assert_eq!(Refused::Malformed.alert(), 50);
        assert_eq!(Refused::TooLarge(1 << 20).alert(), 50);
        for unexpected in [
            Refused::Unexpected(20),
            Refused::Misaligned,
            Refused::Interrupted,
        ] {
            assert_eq!(unexpected.alert(), 10, "{unexpected}");
            assert_eq!(unexpected.reason(), "unexpected_record");
        }
    }
}
