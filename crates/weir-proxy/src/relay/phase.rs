//! Where a client's relay stands, and what becomes of a server connection when the
//! client stops holding it: both decided here, in one place each.

/// The relay's phase. Timers, shutdown and the registry's state follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No server connection held: the client is between requests (transaction mode)
    /// or has not sent one yet.
    Idle,
    /// Waiting for the pool to hand out a server connection.
    Waiting,
    /// A server connection is held and the client's work is under way on it.
    Transaction,
    /// The client's work is answered; the proxy's own queries (settings read-back or
    /// restore, the pin check) drain to their ReadyForQuery before the server goes back.
    Draining,
    /// Between transactions with the server kept: session mode, or a session feature
    /// pins the client to it.
    Pinned,
}

impl Phase {
    /// Between transactions: a shutdown may end the session here and
    /// `client_idle_timeout` runs, never in the middle of a transaction.
    pub fn between_transactions(self) -> bool {
        matches!(self, Phase::Idle | Phase::Pinned)
    }
}

/// What is done with a server connection the client stops holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Back to the pool as it is: idle, every answer relayed, state known.
    Clean,
    /// Run `server_reset_query` first (session mode, or a pinned client left).
    Reset,
    /// Close it: its state cannot be vouched for.
    Close,
}

/// Why the client stops holding its server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parting {
    /// The transaction is over (transaction mode, not pinned).
    TransactionDone,
    /// The client left or its session ended with an error of its own.
    ClientLeft,
    /// The server connection failed, said FATAL, or a query on it timed out.
    ServerFailed,
}

/// What the server connection is worth after `parting`.
///
/// * `idle`: every message sent was answered and nothing is half read.
/// * `cancel_in_flight`: a cancel request may still be on its way to it, and would
///   hit the next client's query.
/// * `pinned`: a session feature (LISTEN, a temp table, ...) ties its session state
///   to the client that leaves.
/// * `reset`: `server_reset_query` should run (set, and session mode or pinned).
pub fn verdict(
    parting: Parting,
    idle: bool,
    cancel_in_flight: bool,
    pinned: bool,
    reset: bool,
) -> Reuse {
    match parting {
        Parting::ServerFailed => Reuse::Close,
        _ if !idle || cancel_in_flight => Reuse::Close,
        Parting::TransactionDone => Reuse::Clean,
        Parting::ClientLeft if reset => Reuse::Reset,
        // Pinned state that no reset query clears cannot be handed to another client.
        Parting::ClientLeft if pinned => Reuse::Close,
        Parting::ClientLeft => Reuse::Clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_or_busy_server_is_closed() {
        assert_eq!(
            verdict(Parting::ServerFailed, true, false, false, true),
            Reuse::Close
        );
        for parting in [Parting::TransactionDone, Parting::ClientLeft] {
            assert_eq!(verdict(parting, false, false, false, true), Reuse::Close);
            assert_eq!(verdict(parting, true, true, false, true), Reuse::Close);
        }
    }

    #[test]
    fn an_idle_server_goes_back_clean_or_reset() {
        assert_eq!(
            verdict(Parting::TransactionDone, true, false, false, false),
            Reuse::Clean
        );
        assert_eq!(
            verdict(Parting::ClientLeft, true, false, false, false),
            Reuse::Clean
        );
        assert_eq!(
            verdict(Parting::ClientLeft, true, false, false, true),
            Reuse::Reset
        );
        assert_eq!(
            verdict(Parting::ClientLeft, true, false, true, true),
            Reuse::Reset
        );
        // Pinned and no reset query: nothing clears its state.
        assert_eq!(
            verdict(Parting::ClientLeft, true, false, true, false),
            Reuse::Close
        );
    }

    #[test]
    fn shutdown_and_idle_timeouts_wait_for_a_transaction_boundary() {
        assert!(Phase::Idle.between_transactions());
        assert!(Phase::Pinned.between_transactions());
        for p in [Phase::Waiting, Phase::Transaction, Phase::Draining] {
            assert!(!p.between_transactions());
        }
    }
}
