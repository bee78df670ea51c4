//! The adversary of `tests::adversary` with the fuzzer choosing every step: one sequence per
//! input, each on a fresh channel; a fresh signer every 100 inputs (every withdrawal looks at
//! every channel). Any broken invariant of the signer's promise is a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;
use tests::adversary::{Adversary, FromBytes, Stats};

/// The signer in use and how many sequences it has run.
static ADVERSARY: Mutex<Option<(Adversary, u64)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut slot = ADVERSARY.lock().unwrap_or_else(|p| p.into_inner());
    if slot.as_ref().is_none_or(|(_, n)| *n >= 100) {
        *slot = Some((Adversary::new(), 0));
    }
    let (adversary, n) = slot.as_mut().expect("just set");
    *n += 1;
    let steps = (4 + data.len() / 8).min(40);
    let mut stats = Stats::default();
    if let Err(v) = adversary.run(*n, steps, &mut FromBytes(data), &mut stats) {
        panic!("invariant broken: {}", v.0);
    }
});
