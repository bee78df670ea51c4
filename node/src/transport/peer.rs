//! A connected peer: the BOLT 8 handshake over a stream, then encrypted messages both ways,
//! with BOLT 1's housekeeping (`init` first, pings answered, unknown odd messages ignored,
//! unknown even messages fatal).
//!
//! [`Peer::connect`] (initiator, knows the peer's node id) and [`Peer::accept`] (responder,
//! learns it) run the handshake with a fresh random ephemeral key and the node's static key
//! behind [`Ecdh`]. Then [`Peer::exchange_init`] sends our `init` and checks the peer's.
//!
//! Reading is cancel-safe: [`Peer::recv`] and [`Peer::recv_raw`] keep partial input in a
//! buffer and advance the receiving nonce only once a whole message is in, so they can sit
//! in a `tokio::select!`. Writing queues the encrypted bytes first, so a cancelled write
//! leaves the rest queued and the next call sends it before anything else: a message is
//! never torn or reordered.

use super::ecdh::Ecdh;
use super::noise::{
    CipherError, Decryptor, Encryptor, HandshakeError, Initiator, Responder, ACT_ONE_LEN,
    ACT_THREE_LEN, ACT_TWO_LEN, LENGTH_HEADER_LEN, MAC_LEN,
};
use super::wire::{FeatureError, Init, Message, Notice, Ping, WireError, PONG_LIMIT};
use secp256k1::{PublicKey, SecretKey};
use std::collections::VecDeque;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a handshake may take, from the first byte sent or awaited to the last act.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a parting `warning` may take to write.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many pings may wait for their pong.
const MAX_PINGS_IN_FLIGHT: usize = 64;

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The socket failed.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection.
    #[error("the peer closed the connection{}", if *.mid_message { " in the middle of a message" } else { "" })]
    Closed {
        /// Whether it did so in the middle of a message.
        mid_message: bool,
    },
    /// The handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The handshake took longer than [`HANDSHAKE_TIMEOUT`].
    #[error("handshake did not finish within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    /// An encrypted message did not authenticate, or one to send was too long.
    #[error("transport: {0}")]
    Cipher(#[from] CipherError),
    /// The peer sent a malformed message.
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    /// The peer's first message was not `init`.
    #[error("expected init first, got message type {0}")]
    InitExpected(u16),
    /// The peer's features make the connection impossible.
    #[error("init: {0}")]
    Features(#[from] FeatureError),
    /// The peer's `networks` and ours have no chain in common.
    #[error("init: no chain in common with the peer")]
    NoCommonChain,
    /// A message of an even type nobody here knows (BOLT 1: close the connection).
    #[error("unknown even message type {0}")]
    UnknownEvenMessage(u16),
    /// A message was asked for before `init` was exchanged, or `init` was sent twice.
    #[error("init must be exchanged exactly once, before any other message")]
    InitOrder,
}

/// Reads exactly `N` bytes of a handshake act; a short read is
/// [`HandshakeError::ActLength`].
async fn read_act<S: AsyncRead + Unpin, const N: usize>(
    stream: &mut S,
    act: u8,
) -> Result<[u8; N], PeerError> {
    let mut buf = [0u8; N];
    let mut got = 0;
    while got < N {
        let n = stream.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(HandshakeError::ActLength {
                act,
                len: got,
                expected: N,
            }
            .into());
        }
        got += n;
    }
    Ok(buf)
}

async fn write_act<S: AsyncWrite + Unpin>(stream: &mut S, act: &[u8]) -> Result<(), PeerError> {
    stream.write_all(act).await?;
    stream.flush().await?;
    Ok(())
}

fn ephemeral_key() -> SecretKey {
    SecretKey::new(&mut secp256k1::rand::thread_rng())
}

/// Message types the application reads itself (so they are not "unknown").
pub type HandledTypes = fn(u16) -> bool;

/// A connection to a peer after the BOLT 8 handshake.
pub struct Peer<S = TcpStream> {
    stream: S,
    encryptor: Encryptor,
    decryptor: Decryptor,
    remote_id: PublicKey,
    /// Received bytes not yet decrypted.
    rbuf: Vec<u8>,
    /// The size of the body (with its MAC) once its length prefix is decrypted.
    body_len: Option<usize>,
    /// Encrypted bytes not yet written.
    wbuf: Vec<u8>,
    init_sent: bool,
    remote_init: Option<Init>,
    /// `num_pong_bytes` of pings sent and not yet answered, oldest first.
    pings: VecDeque<u16>,
    handles: HandledTypes,
}

impl<S> std::fmt::Debug for Peer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("remote_id", &self.remote_id)
            .field("remote_init", &self.remote_init)
            .finish_non_exhaustive()
    }
}

impl Peer<TcpStream> {
    /// Connects to `addr` and runs the handshake as initiator (see [`Peer::connect`]).
    ///
    /// # Errors
    /// A [`PeerError`] if the connection or the handshake fails.
    pub async fn connect_tcp<E: Ecdh>(
        addr: std::net::SocketAddr,
        ecdh: &E,
        local_id: PublicKey,
        remote_id: PublicKey,
    ) -> Result<Peer<TcpStream>, PeerError> {
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| PeerError::HandshakeTimeout)??;
        stream.set_nodelay(true)?;
        Peer::connect(stream, ecdh, local_id, remote_id).await
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.peer_addr()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Peer<S> {
    /// Runs the handshake as initiator towards the node `remote_id`: we are `local_id`,
    /// whose static-key ECDH (act three's `se`) is `ecdh`'s. Our ephemeral key is random.
    ///
    /// # Errors
    /// A [`PeerError`] if the handshake fails or exceeds [`HANDSHAKE_TIMEOUT`] (a wrong
    /// `remote_id` shows up as a failed act two or a closed connection: the responder
    /// cannot authenticate act one).
    pub async fn connect<E: Ecdh>(
        mut stream: S,
        ecdh: &E,
        local_id: PublicKey,
        remote_id: PublicKey,
    ) -> Result<Peer<S>, PeerError> {
        let run = async {
            let (initiator, act1) = Initiator::new(local_id, &remote_id, ephemeral_key());
            write_act(&mut stream, &act1).await?;
            let act2: [u8; ACT_TWO_LEN] = read_act(&mut stream, 2).await?;
            let (act3, transport) = initiator.read_act_two(&act2, ecdh).await?;
            write_act(&mut stream, &act3).await?;
            Ok::<_, PeerError>(transport)
        };
        let transport = tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
            .await
            .map_err(|_| PeerError::HandshakeTimeout)??;
        let (encryptor, decryptor) = transport.split();
        Ok(Peer::new(stream, encryptor, decryptor, remote_id))
    }

    /// Runs the handshake as responder: we are `local_id`, whose static-key ECDH (act
    /// one's `es`) is `ecdh`'s. The peer's node id is [`Peer::remote_id`] afterwards.
    ///
    /// # Errors
    /// A [`PeerError`] if the handshake fails or exceeds [`HANDSHAKE_TIMEOUT`].
    pub async fn accept<E: Ecdh>(
        mut stream: S,
        ecdh: &E,
        local_id: PublicKey,
    ) -> Result<Peer<S>, PeerError> {
        let run = async {
            let responder = Responder::new(&local_id, ephemeral_key());
            let act1: [u8; ACT_ONE_LEN] = read_act(&mut stream, 1).await?;
            let (wait3, act2) = responder.read_act_one(&act1, ecdh).await?;
            write_act(&mut stream, &act2).await?;
            let act3: [u8; ACT_THREE_LEN] = read_act(&mut stream, 3).await?;
            Ok::<_, PeerError>(wait3.read_act_three(&act3)?)
        };
        let (remote_id, transport) = tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
            .await
            .map_err(|_| PeerError::HandshakeTimeout)??;
        let (encryptor, decryptor) = transport.split();
        Ok(Peer::new(stream, encryptor, decryptor, remote_id))
    }

    fn new(stream: S, encryptor: Encryptor, decryptor: Decryptor, remote_id: PublicKey) -> Self {
        Peer {
            stream,
            encryptor,
            decryptor,
            remote_id,
            rbuf: Vec::new(),
            body_len: None,
            wbuf: Vec::new(),
            init_sent: false,
            remote_init: None,
            pings: VecDeque::new(),
            handles: |_| false,
        }
    }

    /// The peer's node id (authenticated by the handshake).
    pub fn remote_id(&self) -> &PublicKey {
        &self.remote_id
    }

    /// The peer's `init`, once [`Peer::exchange_init`] has succeeded.
    pub fn remote_init(&self) -> Option<&Init> {
        self.remote_init.as_ref()
    }

    /// Declares the message types the caller reads itself: [`Peer::recv`] returns them as
    /// [`Message::Unknown`] instead of ignoring them (odd) or failing (even).
    pub fn set_handled_types(&mut self, handles: HandledTypes) {
        self.handles = handles;
    }

    /// Sends our `init` and reads the peer's, which must be its first message. The peer's
    /// is refused (after a `warning` that says why) if it requires a feature we do not
    /// know, lacks a dependency, or shares no chain with ours.
    ///
    /// # Errors
    /// [`PeerError::InitExpected`], [`PeerError::Features`], [`PeerError::NoCommonChain`],
    /// [`PeerError::InitOrder`] if called twice, or a transport error.
    pub async fn exchange_init(&mut self, ours: &Init) -> Result<&Init, PeerError> {
        if self.init_sent {
            return Err(PeerError::InitOrder);
        }
        self.init_sent = true;
        self.send_unchecked(&Message::Init(ours.clone())).await?;
        let first = self.recv_raw().await?;
        let theirs = match Message::decode(&first)? {
            Message::Init(i) => i,
            other => return Err(PeerError::InitExpected(other.msg_type())),
        };
        let refusal = match theirs.combined_features().check() {
            Err(e) => Some(PeerError::Features(e)),
            Ok(()) if !theirs.shares_a_chain_with(&ours.networks) => Some(PeerError::NoCommonChain),
            Ok(()) => None,
        };
        if let Some(e) = refusal {
            // Best effort, briefly (the peer may not be reading): the connection is closed
            // either way.
            let warning = Message::Warning(Notice::connection(&e.to_string()));
            let _ = tokio::time::timeout(NOTICE_TIMEOUT, self.send_unchecked(&warning)).await;
            return Err(e);
        }
        Ok(self.remote_init.insert(theirs))
    }

    /// Queues `msg` (type + payload) and writes everything queued.
    ///
    /// # Errors
    /// [`CipherError::TooLong`] (nothing queued) or a socket error.
    pub async fn send_raw(&mut self, msg: &[u8]) -> Result<(), PeerError> {
        if msg.len() < 2 {
            return Err(WireError::NoType.into());
        }
        self.encryptor.encrypt_message(msg, &mut self.wbuf)?;
        self.flush().await
    }

    /// Encodes and sends a message. Only after [`Peer::exchange_init`] (BOLT 1: nothing
    /// before the peer's `init`), and never `init` itself.
    ///
    /// # Errors
    /// [`PeerError::InitOrder`], an encoding error, or a socket error.
    pub async fn send(&mut self, msg: &Message) -> Result<(), PeerError> {
        if matches!(msg, Message::Init(_)) || self.remote_init.is_none() {
            return Err(PeerError::InitOrder);
        }
        self.send_unchecked(msg).await
    }

    async fn send_unchecked(&mut self, msg: &Message) -> Result<(), PeerError> {
        let bytes = msg.encode()?;
        self.send_raw(&bytes).await
    }

    /// Sends a `ping` asking for `num_pong_bytes` of pong (none at or above
    /// [`PONG_LIMIT`]) with `byteslen` bytes of zero padding. Its pong comes back through
    /// [`Peer::recv`].
    ///
    /// # Errors
    /// Those of [`Peer::send`].
    pub async fn ping(&mut self, num_pong_bytes: u16, byteslen: u16) -> Result<(), PeerError> {
        self.send(&Message::Ping(Ping {
            num_pong_bytes,
            byteslen,
        }))
        .await?;
        if num_pong_bytes < PONG_LIMIT {
            if self.pings.len() == MAX_PINGS_IN_FLIGHT {
                self.pings.pop_front();
            }
            self.pings.push_back(num_pong_bytes);
        }
        Ok(())
    }

    /// Writes everything queued (cancel-safe: what is not written stays queued).
    ///
    /// # Errors
    /// A socket error.
    pub async fn flush(&mut self) -> Result<(), PeerError> {
        while !self.wbuf.is_empty() {
            let n = self.stream.write(&self.wbuf).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero).into());
            }
            self.wbuf.drain(..n);
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// The next decrypted message (type + payload), whatever it is. Cancel-safe.
    ///
    /// # Errors
    /// [`PeerError::Closed`] at the end of the stream, [`PeerError::Cipher`] if a message
    /// does not authenticate (the session cannot continue), or a socket error.
    pub async fn recv_raw(&mut self) -> Result<Vec<u8>, PeerError> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(msg) = self.take_message()? {
                return Ok(msg);
            }
            // Anything still queued goes out before we wait for the peer.
            if !self.wbuf.is_empty() {
                self.flush().await?;
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                let mid_message = !self.rbuf.is_empty() || self.body_len.is_some();
                return Err(PeerError::Closed { mid_message });
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Decrypts a whole message from the buffer if one is there (no await: the state
    /// stays consistent whatever is cancelled).
    fn take_message(&mut self) -> Result<Option<Vec<u8>>, PeerError> {
        if self.body_len.is_none() && self.rbuf.len() >= LENGTH_HEADER_LEN {
            let len = self
                .decryptor
                .decrypt_length(&self.rbuf[..LENGTH_HEADER_LEN])?;
            self.rbuf.drain(..LENGTH_HEADER_LEN);
            self.body_len = Some(usize::from(len) + MAC_LEN);
        }
        match self.body_len {
            Some(n) if self.rbuf.len() >= n => {
                let msg = self.decryptor.decrypt_body(&self.rbuf[..n])?;
                self.rbuf.drain(..n);
                self.body_len = None;
                Ok(Some(msg))
            }
            _ => Ok(None),
        }
    }

    /// The next message for the caller, after BOLT 1's housekeeping: a `ping` is answered
    /// (and not returned), a `pong` is returned only if it answers one of our pings, a
    /// message of unknown type that the caller does not handle
    /// ([`Peer::set_handled_types`]) is skipped if odd and fatal if even. `init`,
    /// `warning`, `error`, `pong` and handled types are returned; an `error` means the peer
    /// is failing the channel it names (all of them for [`super::wire::ALL_CHANNELS`]).
    /// Cancel-safe, like [`Peer::recv_raw`].
    ///
    /// # Errors
    /// [`PeerError::InitOrder`] before [`Peer::exchange_init`],
    /// [`PeerError::UnknownEvenMessage`], [`PeerError::Wire`] for a malformed message, and
    /// the errors of [`Peer::recv_raw`].
    pub async fn recv(&mut self) -> Result<Message, PeerError> {
        if self.remote_init.is_none() {
            return Err(PeerError::InitOrder);
        }
        loop {
            let raw = self.recv_raw().await?;
            let msg = if raw.len() >= 2 && (self.handles)(u16::from_be_bytes([raw[0], raw[1]])) {
                Message::Unknown {
                    msg_type: u16::from_be_bytes([raw[0], raw[1]]),
                    payload: raw[2..].to_vec(),
                }
            } else {
                Message::decode(&raw)?
            };
            match msg {
                Message::Ping(p) => {
                    if p.num_pong_bytes < PONG_LIMIT {
                        self.send(&Message::Pong(super::wire::Pong {
                            byteslen: p.num_pong_bytes,
                        }))
                        .await?;
                    }
                }
                Message::Pong(p) => match self.pings.iter().position(|&n| n == p.byteslen) {
                    Some(i) => {
                        self.pings.remove(i);
                        return Ok(msg);
                    }
                    None => log::debug!(
                        "peer {}: pong of {} bytes answers no ping; ignored",
                        self.remote_id,
                        p.byteslen
                    ),
                },
                Message::Unknown { msg_type, .. } if !(self.handles)(msg_type) => {
                    if super::wire::is_even(u64::from(msg_type)) {
                        return Err(PeerError::UnknownEvenMessage(msg_type));
                    }
                    log::debug!(
                        "peer {}: unknown odd message type {msg_type} ignored",
                        self.remote_id
                    );
                }
                other => return Ok(other),
            }
        }
    }

    /// Sends what is queued and closes our sending side (the peer sees the end of the
    /// stream).
    ///
    /// # Errors
    /// A socket error.
    pub async fn shutdown(&mut self) -> Result<(), PeerError> {
        self.flush().await?;
        self.stream.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ecdh::test_key::LocalKey;
    use super::super::wire::{Features, Notice, ALL_CHANNELS, ERROR};
    use super::*;
    use bitcoin::blockdata::constants::ChainHash;
    use bitcoin::Network;
    use tokio::io::DuplexStream;

    fn key(b: u8) -> LocalKey {
        LocalKey(SecretKey::from_slice(&[b; 32]).unwrap())
    }

    fn init(net: Network) -> Init {
        Init::new(
            Features::node_default(),
            vec![ChainHash::using_genesis_block(net)],
        )
    }

    async fn pair() -> (Peer<DuplexStream>, Peer<DuplexStream>) {
        let (a, b) = tokio::io::duplex(256);
        let (ka, kb) = (key(1), key(2));
        let (pa, pb) = (ka.public_key(), kb.public_key());
        let (ra, rb) = tokio::join!(Peer::connect(a, &ka, pa, pb), Peer::accept(b, &kb, pb));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.remote_id(), &pb);
        assert_eq!(rb.remote_id(), &pa);
        (ra, rb)
    }

    async fn with_init() -> (Peer<DuplexStream>, Peer<DuplexStream>) {
        let (mut a, mut b) = pair().await;
        let (ia, ib) = (init(Network::Regtest), init(Network::Regtest));
        let (ra, rb) = tokio::join!(a.exchange_init(&ia), b.exchange_init(&ib));
        assert_eq!(ra.unwrap(), &ib);
        assert_eq!(rb.unwrap(), &ia);
        (a, b)
    }

    /// A peer task with the signer's ECDH can be spawned (compile-time check).
    #[allow(dead_code)]
    fn futures_are_send(stream: TcpStream, client: &crate::HsmClient, id: PublicKey) {
        fn is_send<T: Send>(_: T) {}
        is_send(Peer::accept(stream, client, id));
    }

    #[tokio::test]
    async fn pings_across_key_rotations() {
        let (mut a, mut b) = with_init().await;
        // b answers pings (inside recv) while waiting for a's final warning.
        let responder = tokio::spawn(async move {
            match b.recv().await.unwrap() {
                Message::Warning(n) => (b, n),
                other => panic!("unexpected {other:?}"),
            }
        });
        for i in 0..1200u16 {
            a.ping(i % 100, 3).await.unwrap();
            match a.recv().await.unwrap() {
                Message::Pong(p) => assert_eq!(p.byteslen, i % 100),
                other => panic!("unexpected {other:?}"),
            }
        }
        a.send(&Message::Warning(Notice::connection("done")))
            .await
            .unwrap();
        let (_b, n) = responder.await.unwrap();
        assert_eq!(n.text(), "done");
    }

    #[tokio::test]
    async fn unknown_messages_and_unsolicited_pongs() {
        let (mut a, mut b) = with_init().await;
        a.send_raw(&[0x01, 0x01, 9]).await.unwrap(); // odd 257: ignored
        a.send_raw(&[0, 19, 0, 0]).await.unwrap(); // pong nobody asked for: ignored
        a.ping(PONG_LIMIT, 0).await.unwrap(); // no pong asked for
        a.send(&Message::Error(Notice::connection("x")))
            .await
            .unwrap();
        assert!(
            matches!(b.recv().await.unwrap(), Message::Error(n) if n.channel_id == ALL_CHANNELS)
        );
        a.send_raw(&[0x01, 0x00]).await.unwrap(); // even 256: fatal
        assert!(matches!(
            b.recv().await,
            Err(PeerError::UnknownEvenMessage(256))
        ));
        // A handled type is returned.
        b.set_handled_types(|t| t == 32);
        a.send_raw(&[0, 32, 1]).await.unwrap();
        assert_eq!(
            b.recv().await.unwrap(),
            Message::Unknown {
                msg_type: 32,
                payload: vec![1]
            }
        );
        // A malformed BOLT 1 message is an error, not a panic.
        a.send_raw(&[0, ERROR as u8, 1]).await.unwrap();
        assert!(matches!(b.recv().await, Err(PeerError::Wire(_))));
        drop(a);
        assert!(matches!(
            b.recv().await,
            Err(PeerError::Closed { mid_message: false })
        ));
    }

    #[tokio::test]
    async fn init_is_checked() {
        // Another chain: refused with a warning.
        let (mut a, mut b) = pair().await;
        let (main, reg) = (init(Network::Bitcoin), init(Network::Regtest));
        let (ra, rb) = tokio::join!(a.exchange_init(&main), b.exchange_init(&reg));
        assert!(matches!(ra, Err(PeerError::NoCommonChain)), "{ra:?}");
        assert!(matches!(rb, Err(PeerError::NoCommonChain)));

        // Unknown required feature.
        let (mut a, mut b) = pair().await;
        let mut weird = init(Network::Regtest);
        weird.features.set(200);
        let (ra, rb) = tokio::join!(a.exchange_init(&reg), b.exchange_init(&weird));
        assert!(matches!(
            ra,
            Err(PeerError::Features(FeatureError::UnknownRequired(200)))
        ));
        assert!(rb.is_ok());
        assert!(b
            .recv()
            .await
            .is_ok_and(|m| matches!(m, Message::Warning(_))));

        // Something else first.
        let (mut a, mut b) = pair().await;
        a.send_raw(&[0, 18, 0, 0, 0, 0]).await.unwrap();
        let r = b.exchange_init(&init(Network::Regtest)).await;
        assert!(matches!(r, Err(PeerError::InitExpected(18))));

        // Messages before init.
        let (mut a, _b) = pair().await;
        assert!(matches!(a.recv().await, Err(PeerError::InitOrder)));
        assert!(matches!(a.ping(1, 1).await, Err(PeerError::InitOrder)));
    }

    #[tokio::test]
    async fn wrong_node_id_fails_the_handshake() {
        let (a, b) = tokio::io::duplex(256);
        let (ka, kb) = (key(1), key(2));
        let (pa, pb) = (ka.public_key(), kb.public_key());
        let wrong = key(3).public_key();
        let (ra, rb) = tokio::join!(Peer::connect(a, &ka, pa, wrong), async move {
            let r = Peer::accept(b, &kb, pb).await;
            // The responder gives up: the initiator sees the end of the stream.
            r
        });
        assert!(matches!(
            rb,
            Err(PeerError::Handshake(HandshakeError::BadTag { act: 1 }))
        ));
        assert!(
            matches!(
                ra,
                Err(PeerError::Handshake(HandshakeError::ActLength {
                    act: 2,
                    ..
                }))
            ),
            "{ra:?}"
        );
    }

    #[tokio::test]
    async fn recv_is_cancel_safe() {
        let (mut a, mut b) = with_init().await;
        // Write a message in two halves with a cancelled recv in between.
        let mut wire = Vec::new();
        a.encryptor.encrypt_message(&[0, 33, 7], &mut wire).unwrap();
        a.stream.write_all(&wire[..10]).await.unwrap();
        b.set_handled_types(|t| t == 33);
        let r = tokio::time::timeout(Duration::from_millis(20), b.recv()).await;
        assert!(r.is_err());
        a.stream.write_all(&wire[10..]).await.unwrap();
        assert_eq!(
            b.recv().await.unwrap(),
            Message::Unknown {
                msg_type: 33,
                payload: vec![7]
            }
        );
        // A corrupted message is a cipher error.
        let mut wire = Vec::new();
        a.encryptor.encrypt_message(&[0, 33, 7], &mut wire).unwrap();
        wire[20] ^= 1;
        a.stream.write_all(&wire).await.unwrap();
        assert!(matches!(
            b.recv().await,
            Err(PeerError::Cipher(CipherError::BadTag("body")))
        ));
    }
}
