//! The adversary of `tests::adversary` with the fuzzer choosing every step: one sequence per
//! input, on a fresh channel of one signer shared by all inputs; any broken invariant of the
//! signer's promise is a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use tests::adversary::{Adversary, FromBytes, Stats};

static ADVERSARY: OnceLock<Adversary> = OnceLock::new();
static NEXT_DBID: AtomicU64 = AtomicU64::new(1);

fuzz_target!(|data: &[u8]| {
    let adversary = ADVERSARY.get_or_init(Adversary::new);
    let dbid = NEXT_DBID.fetch_add(1, Ordering::Relaxed);
    let steps = 4 + data.len() / 8;
    let mut stats = Stats::default();
    if let Err(v) = adversary.run(dbid, steps.min(40), &mut FromBytes(data), &mut stats) {
        panic!("invariant broken: {}", v.0);
    }
});
