//! Who is asking: the client a request came from.

use protocol::types::NodeId;
use protocol::Permissions;

/// The client a request comes from, as lightningd created it with `hsmd_client_hsmfd`.
///
/// The master client (lightningd's own fd) has no peer: its `peer_id` is the zero id, its
/// dbid 0 and its permissions [`Permissions::LIGHTNINGD`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientContext {
    /// The peer this client serves (the node's own id for connectd-like clients).
    pub peer_id: NodeId,
    /// The channel's database id, 0 for global clients.
    pub dbid: u64,
    /// What this client may ask.
    pub permissions: Permissions,
    /// Whether this is lightningd's own fd.
    pub is_master: bool,
}

impl ClientContext {
    /// lightningd's own client.
    pub fn master() -> Self {
        ClientContext {
            peer_id: NodeId::from_bytes([0; 33]),
            dbid: 0,
            permissions: Permissions::LIGHTNINGD,
            is_master: true,
        }
    }

    /// A client handed out by `hsmd_client_hsmfd`.
    pub fn client(peer_id: NodeId, dbid: u64, permissions: Permissions) -> Self {
        ClientContext {
            peer_id,
            dbid,
            permissions,
            is_master: false,
        }
    }

    /// The key of this client's channel in the state store (peer id, then dbid).
    pub fn channel_key(&self) -> ChannelKey {
        ChannelKey {
            peer_id: self.peer_id,
            dbid: self.dbid,
        }
    }
}

/// A channel: the peer and the database id lightningd gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    /// The peer.
    pub peer_id: NodeId,
    /// lightningd's database id for the channel.
    pub dbid: u64,
}

impl ChannelKey {
    /// 41 bytes: peer id, then dbid big-endian (so a peer's channels sort together).
    pub fn to_bytes(&self) -> [u8; 41] {
        let mut b = [0u8; 41];
        b[..33].copy_from_slice(self.peer_id.as_bytes());
        b[33..].copy_from_slice(&self.dbid.to_be_bytes());
        b
    }
}
