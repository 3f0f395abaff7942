//! Following other servers, and choosing the one sync dispatcher.
//!
//! - A dedicated connection LISTENs on `deskprov_changes` (every commit NOTIFYs it):
//!   [`Follow::wait`] returns as soon as a commit is announced, or after the poll interval
//!   (the safety net when a notification is lost with a broken connection).
//! - Another dedicated connection holds the session advisory lock of the dispatcher
//!   ([`Follow::try_lead`]): the lock lives exactly as long as that session, so a server that
//!   dies (even `kill -9`) loses it when PostgreSQL notices the closed connection, and another
//!   server's next try wins it.

use std::sync::Mutex;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use super::{Pool, CHANNEL, DISPATCHER_LOCK};
use crate::store::StoreError;

#[derive(Default)]
pub(super) struct Follow {
    listener: Mutex<Option<Client>>,
    /// The session holding (or trying for) the dispatcher's lock, and whether it holds it.
    leader: Mutex<Option<(Client, bool)>>,
}

impl Follow {
    /// Waits up to `timeout` for a commit announcement; true when one came.
    pub(super) fn wait(&self, pool: &Pool, timeout: Duration) -> bool {
        let mut slot = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            match pool.connect().and_then(|mut c| {
                c.batch_execute(&format!("LISTEN {CHANNEL}"))
                    .map(|()| c)
                    .map_err(StoreError::from)
            }) {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "listening for other servers' commits failed");
                    drop(slot);
                    std::thread::sleep(timeout);
                    return false;
                }
            }
        }
        let Some(c) = slot.as_mut() else {
            return false;
        };
        let got = {
            let mut n = c.notifications();
            let got = n.timeout_iter(timeout).next().map(|n| n.is_some());
            if got.is_ok() {
                // Take every announcement already received: one catch-up covers them all.
                let mut pending = n.iter();
                while let Ok(Some(_)) = pending.next() {}
            }
            got
        };
        match got {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(error = %e, "the connection listening for commits broke");
                *slot = None;
                false
            }
        }
    }

    /// Whether this server holds the dispatcher's lock (taking it if it is free).
    pub(super) fn try_lead(&self, pool: &Pool) -> Result<bool, StoreError> {
        let mut slot = self.leader.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((c, held)) = slot.as_mut() {
            if *held {
                // Still ours while the session lives.
                match c.simple_query("SELECT 1") {
                    Ok(_) => return Ok(true),
                    Err(e) => {
                        tracing::warn!(error = %e, "the dispatcher's database session was lost");
                        *slot = None;
                        return Ok(false);
                    }
                }
            }
        }
        if slot.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            *slot = Some((pool.connect()?, false));
        }
        let Some((c, held)) = slot.as_mut() else {
            return Ok(false);
        };
        match c.query_one("SELECT pg_try_advisory_lock($1)", &[&DISPATCHER_LOCK]) {
            Ok(row) => {
                *held = row.get(0);
                Ok(*held)
            }
            Err(e) => {
                *slot = None;
                Err(e.into())
            }
        }
    }
}
