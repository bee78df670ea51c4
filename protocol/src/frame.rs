//! Framing: every message on an hsmd fd is a 4-byte big-endian length, then the message.
//!
//! A length of 2^27 or more is refused before anything is allocated, and the buffer for a
//! frame grows with the bytes that actually arrive, so a peer cannot make us reserve memory
//! it does not send. EOF before the first byte of a frame is a clean end (`Ok(None)`);
//! EOF inside a frame is an error.

use std::fmt;
use std::io::{self, Read, Write};

/// Frames must be shorter than this (2^27 bytes), as in Core Lightning.
pub const MAX_FRAME_LEN: usize = 1 << 27;

/// A frame that could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announced `len` bytes, at or above [`MAX_FRAME_LEN`].
    TooLarge {
        /// The announced length.
        len: u32,
    },
    /// The stream ended inside a frame.
    Truncated {
        /// Bytes the frame needed (prefix included).
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The stream failed.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len } => {
                write!(
                    f,
                    "frame length {len} is not below the limit of {MAX_FRAME_LEN}"
                )
            }
            FrameError::Truncated { expected, got } => {
                write!(f, "stream ended inside a frame ({got} of {expected} bytes)")
            }
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

fn check_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len as usize >= MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    Ok(len as usize)
}

/// Looks for one complete frame at the start of `buf` without allocating.
///
/// `Ok(None)` means more bytes are needed (incomplete is not an error);
/// `Ok(Some((msg, used)))` gives the message and how many bytes of `buf` the frame took.
pub fn parse(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = check_len([buf[0], buf[1], buf[2], buf[3]])?;
    if buf.len() - 4 < len {
        return Ok(None);
    }
    Ok(Some((&buf[4..4 + len], 4 + len)))
}

/// The frame for `msg`: its length prefix, then the message.
///
/// # Errors
/// [`FrameError::TooLarge`] if `msg` is not shorter than [`MAX_FRAME_LEN`] (the peer would
/// refuse it).
pub fn encode(msg: &[u8]) -> Result<Vec<u8>, FrameError> {
    if msg.len() >= MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: u32::try_from(msg.len()).unwrap_or(u32::MAX),
        });
    }
    let mut v = Vec::with_capacity(4 + msg.len());
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    Ok(v)
}

fn too_large(e: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

/// Reads the 4-byte prefix; `Ok(None)` on EOF before its first byte.
fn read_prefix<R: Read>(r: &mut R) -> Result<Option<[u8; 4]>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated { expected: 4, got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(prefix))
}

/// Reads one frame from a blocking stream; `Ok(None)` on a clean EOF between frames.
pub fn read<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let Some(prefix) = read_prefix(r)? else {
        return Ok(None);
    };
    let len = check_len(prefix)?;
    let mut msg = Vec::with_capacity(len.min(64 * 1024));
    r.take(len as u64).read_to_end(&mut msg)?;
    if msg.len() != len {
        return Err(FrameError::Truncated {
            expected: 4 + len,
            got: 4 + msg.len(),
        });
    }
    Ok(Some(msg))
}

/// Writes one frame to a blocking stream.
pub fn write<W: Write>(w: &mut W, msg: &[u8]) -> io::Result<()> {
    w.write_all(&encode(msg).map_err(too_large)?)?;
    w.flush()
}

/// The same on tokio streams.
#[cfg(feature = "tokio")]
pub mod tokio_io {
    use super::{check_len, encode, too_large, FrameError};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Reads one frame; `Ok(None)` on a clean EOF between frames.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
        let mut prefix = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match r.read(&mut prefix[got..]).await? {
                0 if got == 0 => return Ok(None),
                0 => return Err(FrameError::Truncated { expected: 4, got }),
                n => got += n,
            }
        }
        let len = check_len(prefix)?;
        let mut msg = Vec::with_capacity(len.min(64 * 1024));
        (&mut *r).take(len as u64).read_to_end(&mut msg).await?;
        if msg.len() != len {
            return Err(FrameError::Truncated {
                expected: 4 + len,
                got: 4 + msg.len(),
            });
        }
        Ok(Some(msg))
    }

    /// Writes one frame.
    pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> std::io::Result<()> {
        w.write_all(&encode(msg).map_err(too_large)?).await?;
        w.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_too_large_to_frame_is_an_error_not_a_panic() {
        // Zeroed memory is mapped lazily: this costs no 128 MiB.
        let big = vec![0u8; MAX_FRAME_LEN];
        assert!(matches!(encode(&big), Err(FrameError::TooLarge { .. })));
        let mut sink = Vec::new();
        let e = write(&mut sink, &big).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(sink.is_empty());
        assert_eq!(
            encode(&big[..MAX_FRAME_LEN - 1]).unwrap().len(),
            MAX_FRAME_LEN + 3
        );
    }

    #[test]
    fn round_trip_and_clean_eof() {
        let mut buf = Vec::new();
        write(&mut buf, b"\x00\x01abc").unwrap();
        write(&mut buf, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(read(&mut r).unwrap().unwrap(), b"\x00\x01abc");
        assert_eq!(read(&mut r).unwrap().unwrap(), b"");
        assert!(read(&mut r).unwrap().is_none());
    }

    #[test]
    fn eof_inside_frame_is_an_error() {
        let mut r: &[u8] = &[0, 0, 0, 5, 1, 2];
        assert!(matches!(
            read(&mut r),
            Err(FrameError::Truncated {
                expected: 9,
                got: 6
            })
        ));
        let mut r: &[u8] = &[0, 0];
        assert!(matches!(
            read(&mut r),
            Err(FrameError::Truncated {
                expected: 4,
                got: 2
            })
        ));
    }

    #[test]
    fn too_large_is_refused_before_reading() {
        let mut r: &[u8] = &[0x08, 0, 0, 0];
        assert!(matches!(
            read(&mut r),
            Err(FrameError::TooLarge { len: 0x0800_0000 })
        ));
        let mut r: &[u8] = &[0x07, 0xff, 0xff, 0xff];
        // Just below the limit: accepted as a length, then truncated.
        assert!(matches!(read(&mut r), Err(FrameError::Truncated { .. })));
        assert!(matches!(
            parse(&[0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn parse_reports_incomplete() {
        assert!(parse(&[0, 0]).unwrap().is_none());
        assert!(parse(&[0, 0, 0, 2, 1]).unwrap().is_none());
        let (m, used) = parse(&[0, 0, 0, 2, 1, 2, 9]).unwrap().unwrap();
        assert_eq!((m, used), (&[1u8, 2][..], 6));
    }

    #[tokio::test]
    async fn tokio_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio_io::write(&mut a, b"\x00\x0bhello").await.unwrap();
        drop(a);
        assert_eq!(
            tokio_io::read(&mut b).await.unwrap().unwrap(),
            b"\x00\x0bhello"
        );
        assert!(tokio_io::read(&mut b).await.unwrap().is_none());
    }
}
