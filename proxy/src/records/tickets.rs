//! When may a client connection leave rustls? Once it holds the server's session ticket.
//!
//! A TLS 1.3 server sends its NewSessionTicket after the client's Finished, so a client
//! connection that left rustls right after the handshake would skip the ticket and the next
//! connection could not resume. The outbound side therefore starts forwarding with rustls and
//! switches to gembok's record layer once rustls stored a ticket: both directions stop at their
//! next boundary (what was read is written and flushed), even on a busy connection.
//! [`Watch`] is that connection's view of the route's session store: it stores and serves
//! tickets like the shared store it wraps, and remembers that one arrived.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::Resumption;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, NamedGroup};

#[derive(Debug)]
pub struct Watch {
    store: Arc<dyn ClientSessionStore>,
    ticket: AtomicBool,
}

impl Watch {
    /// Whether a session ticket from the server has been stored.
    pub fn ticket_stored(&self) -> bool {
        self.ticket.load(Ordering::Relaxed)
    }
}

/// Makes `config` (a per-connection copy) store its sessions through a [`Watch`] of `store`.
pub fn watch(config: &mut Arc<ClientConfig>, store: &Arc<dyn ClientSessionStore>) -> Arc<Watch> {
    let watch = Arc::new(Watch {
        store: store.clone(),
        ticket: AtomicBool::new(false),
    });
    Arc::make_mut(config).resumption = Resumption::store(watch.clone());
    watch
}

impl ClientSessionStore for Watch {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.store.set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.store.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.store.set_tls12_session(server_name, value)
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.store.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.store.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.store.insert_tls13_ticket(server_name, value);
        self.ticket.store(true, Ordering::Relaxed);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.store.take_tls13_ticket(server_name)
    }
}
