//! The framing functions on an arbitrary byte stream: `frame::parse` called repeatedly on what
//! is left, `frame::read` on a `&[u8]` reader and `frame::tokio_io::read` on the same bytes
//! must give the same messages, and agree on how the stream ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::frame::{self, FrameError};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// How a stream of frames ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Nothing left after the last frame.
    Clean,
    /// Bytes left that do not make a whole frame.
    Incomplete,
    /// A length prefix at or above the limit.
    TooLarge(u32),
}

/// Drives a future that never waits: reading from a `&[u8]` is always ready.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("reading from a slice returned Pending"),
    }
}

fn with_parse(data: &[u8]) -> (Vec<Vec<u8>>, End) {
    let mut msgs = Vec::new();
    let mut buf = data;
    loop {
        match frame::parse(buf) {
            Ok(Some((msg, used))) => {
                assert!(used >= 4 && used <= buf.len(), "parse used {used} of {}", buf.len());
                assert_eq!(used, msg.len() + 4);
                assert_eq!(&buf[4..used], msg);
                assert_eq!(frame::encode(msg).expect("a parsed frame re-encodes"), &buf[..used]);
                msgs.push(msg.to_vec());
                buf = &buf[used..];
            }
            Ok(None) if buf.is_empty() => return (msgs, End::Clean),
            Ok(None) => return (msgs, End::Incomplete),
            Err(FrameError::TooLarge { len }) => return (msgs, End::TooLarge(len)),
            Err(e) => panic!("parse gave an unexpected error: {e}"),
        }
    }
}

fn with_read(data: &[u8]) -> (Vec<Vec<u8>>, End) {
    let mut msgs = Vec::new();
    let mut r = data;
    loop {
        match frame::read(&mut r) {
            Ok(Some(m)) => msgs.push(m),
            Ok(None) => return (msgs, End::Clean),
            Err(FrameError::Truncated { expected, got }) => {
                assert!(got < expected, "truncated with {got} of {expected}");
                return (msgs, End::Incomplete);
            }
            Err(FrameError::TooLarge { len }) => return (msgs, End::TooLarge(len)),
            Err(e) => panic!("read gave an unexpected error: {e}"),
        }
    }
}

fn with_tokio(data: &[u8]) -> (Vec<Vec<u8>>, End) {
    let mut msgs = Vec::new();
    let mut r = data;
    loop {
        match block_on(frame::tokio_io::read(&mut r)) {
            Ok(Some(m)) => msgs.push(m),
            Ok(None) => return (msgs, End::Clean),
            Err(FrameError::Truncated { expected, got }) => {
                assert!(got < expected, "truncated with {got} of {expected}");
                return (msgs, End::Incomplete);
            }
            Err(FrameError::TooLarge { len }) => return (msgs, End::TooLarge(len)),
            Err(e) => panic!("tokio read gave an unexpected error: {e}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = with_parse(data);
    let read = with_read(data);
    assert_eq!(parsed, read, "frame::parse and frame::read disagree");
    let tokio = with_tokio(data);
    assert_eq!(parsed, tokio, "frame::parse and frame::tokio_io::read disagree");
    // Re-framing the messages gives back the stream up to where it stopped.
    if parsed.1 == End::Clean {
        let again: Vec<u8> = parsed
            .0
            .iter()
            .flat_map(|m| frame::encode(m).expect("a parsed frame re-encodes"))
            .collect();
        assert_eq!(again, data);
    }
});
