//! The subdaemons lightningd asks hsmd clients for, and the permissions it gives each, so
//! that this node's clients have exactly the rights Core Lightning's would.

use protocol::Permissions;

/// Permissions lightningd gives connectd (ECDH for BOLT 8; own node id, dbid 0).
pub const CONNECTD: Permissions = Permissions::CONNECTD;
/// Permissions lightningd gives openingd (commitment points, remote commitments).
pub const OPENINGD: Permissions = Permissions::OPENINGD;
/// Permissions lightningd gives dualopend (openingd's plus liquidity ads and outpoint locks).
pub const DUALOPEND: Permissions = Permissions::DUALOPEND;
/// Permissions lightningd gives channeld (everything a live channel needs).
pub const CHANNELD: Permissions = Permissions::CHANNELD;
/// Permissions lightningd gives closingd (commitment points, mutual close).
pub const CLOSINGD: Permissions = Permissions::CLOSINGD;
/// Permissions lightningd gives onchaind (commitment points, sweeps).
pub const ONCHAIND: Permissions = Permissions::ONCHAIND;
/// Permissions of lightningd's own fd 3 (master | gossip signing | ECDH).
pub const MASTER: Permissions = Permissions::LIGHTNINGD;

/// A Core Lightning subdaemon that gets its own hsmd client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subdaemon {
    /// Peer connections (BOLT 8): a global client (our node id, dbid 0).
    Connectd,
    /// Single-funded channel opening, per channel.
    Openingd,
    /// Dual-funded channel opening, per channel.
    Dualopend,
    /// A live channel.
    Channeld,
    /// Mutual close.
    Closingd,
    /// Watching and sweeping a channel's on-chain outputs.
    Onchaind,
}

impl Subdaemon {
    /// The permissions lightningd gives this subdaemon's client.
    pub const fn permissions(self) -> Permissions {
        match self {
            Subdaemon::Connectd => CONNECTD,
            Subdaemon::Openingd => OPENINGD,
            Subdaemon::Dualopend => DUALOPEND,
            Subdaemon::Channeld => CHANNELD,
            Subdaemon::Closingd => CLOSINGD,
            Subdaemon::Onchaind => ONCHAIND,
        }
    }

    /// Whether its client is global (our own node id, dbid 0) rather than per channel.
    pub const fn is_global(self) -> bool {
        matches!(self, Subdaemon::Connectd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_match_core_lightning() {
        assert_eq!(CONNECTD.bits(), 1);
        assert_eq!(OPENINGD.bits(), 24);
        assert_eq!(DUALOPEND.bits(), 344);
        assert_eq!(CHANNELD.bits(), 447);
        assert_eq!(CLOSINGD.bits(), 40);
        assert_eq!(ONCHAIND.bits(), 12);
        assert_eq!(MASTER.bits(), 1027);
        assert!(Subdaemon::Connectd.is_global() && !Subdaemon::Channeld.is_global());
    }
}
