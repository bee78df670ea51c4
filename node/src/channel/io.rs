//! How the channel code talks to a peer: whole Lightning messages (a type and its payload),
//! over whatever carries them.
//!
//! The BOLT 8 transport implements [`MessageIo`] for a connected peer (after `init`, with
//! pings answered below it); [`memory_pair`] gives two connected in-memory ends for tests
//! and for nodes in one process.

use std::future::Future;
use tokio::sync::mpsc;

/// A connection that carries Lightning messages.
///
/// Implementations deliver messages in order and whole. `recv` should hand up every message
/// the channel code may need (the channel-opening types 32 to 36, `warning` 1 and `error`
/// 17); what it does with pings and unknown odd types is its own business (the channel code
/// skips odd types and pings it is given).
pub trait MessageIo: Send {
    /// Why the connection failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Sends one message: its type and its payload (what follows the type).
    fn send(
        &mut self,
        msg_type: u16,
        payload: &[u8],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The next message: its type and payload.
    fn recv(&mut self) -> impl Future<Output = Result<(u16, Vec<u8>), Self::Error>> + Send;
}

impl<T: MessageIo> MessageIo for &mut T {
    type Error = T::Error;

    fn send(
        &mut self,
        msg_type: u16,
        payload: &[u8],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        (**self).send(msg_type, payload)
    }

    fn recv(&mut self) -> impl Future<Output = Result<(u16, Vec<u8>), Self::Error>> + Send {
        (**self).recv()
    }
}

/// The other end of a [`MemoryIo`] is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the other end of the in-memory connection is closed")]
pub struct MemoryClosed;

/// One end of an in-memory connection (see [`memory_pair`]).
#[derive(Debug)]
pub struct MemoryIo {
    tx: mpsc::UnboundedSender<(u16, Vec<u8>)>,
    rx: mpsc::UnboundedReceiver<(u16, Vec<u8>)>,
}

/// Two connected in-memory ends: what one sends, the other receives, in order.
pub fn memory_pair() -> (MemoryIo, MemoryIo) {
    let (a_tx, b_rx) = mpsc::unbounded_channel();
    let (b_tx, a_rx) = mpsc::unbounded_channel();
    (
        MemoryIo { tx: a_tx, rx: a_rx },
        MemoryIo { tx: b_tx, rx: b_rx },
    )
}

impl MessageIo for MemoryIo {
    type Error = MemoryClosed;

    async fn send(&mut self, msg_type: u16, payload: &[u8]) -> Result<(), MemoryClosed> {
        self.tx
            .send((msg_type, payload.to_vec()))
            .map_err(|_| MemoryClosed)
    }

    async fn recv(&mut self) -> Result<(u16, Vec<u8>), MemoryClosed> {
        self.rx.recv().await.ok_or(MemoryClosed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_ends_carry_messages_in_order_and_report_closing() {
        let (mut a, mut b) = memory_pair();
        a.send(32, b"one").await.unwrap();
        a.send(33, b"two").await.unwrap();
        assert_eq!(b.recv().await.unwrap(), (32, b"one".to_vec()));
        let mut by_ref = &mut b;
        assert_eq!(
            <&mut MemoryIo as MessageIo>::recv(&mut by_ref)
                .await
                .unwrap(),
            (33, b"two".to_vec())
        );
        b.send(1, b"").await.unwrap();
        assert_eq!(a.recv().await.unwrap(), (1, Vec::new()));
        drop(a);
        assert_eq!(b.recv().await, Err(MemoryClosed));
        assert_eq!(b.send(1, b"").await, Err(MemoryClosed));
    }
}
