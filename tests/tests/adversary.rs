//! The adversary test of the signer's promise (see `tests::adversary`): generated sequences
//! of legitimate, hostile, disordered and concurrent requests against the in-process signer
//! under the attack corpus's enforcing policy, with the invariants checked after every answer.
//! `ADVERSARY_SEQUENCES` and `ADVERSARY_SEED` run more, or other, sequences.

use tests::adversary::run_seeded;

#[test]
fn no_sequence_of_requests_breaks_the_signers_promise() {
    let sequences: u64 = std::env::var("ADVERSARY_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let seed: u64 = std::env::var("ADVERSARY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    // Two signers in parallel, half the sequences each.
    let halves = [seed, seed ^ 0xa5a5_a5a5];
    let stats: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = halves
            .iter()
            .map(|&seed| s.spawn(move || run_seeded(seed, sequences / 2, 14)))
            .collect();
        runs.into_iter()
            .map(|r| {
                r.join()
                    .expect("no panic")
                    .unwrap_or_else(|v| panic!("{}", v.0))
            })
            .collect()
    });
    let total = stats
        .iter()
        .fold(tests::adversary::Stats::default(), |a, b| {
            tests::adversary::Stats {
                sequences: a.sequences + b.sequences,
                requests: a.requests + b.requests,
                answered: a.answered + b.answered,
                refused: a.refused + b.refused,
                hostile: a.hostile + b.hostile,
            }
        });
    eprintln!("{total:?}");
    assert_eq!(total.sequences, sequences / 2 * 2);
    // Not vacuous: the legitimate steps went through, and hostile ones were tried.
    assert!(total.answered > total.requests / 3, "{total:?}");
    assert!(total.hostile > total.sequences, "{total:?}");
}

/// Replays one sequence: `ADVERSARY_ONE=seed,dbid` (with `ADVERSARY_TRACE=1` to see it).
#[test]
fn one_sequence_replays() {
    let (seed, dbid) = std::env::var("ADVERSARY_ONE")
        .ok()
        .and_then(|v| {
            let (a, b) = v.split_once(',')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((1, 1));
    tests::adversary::run_one(seed, dbid, 14).unwrap_or_else(|v| panic!("{}", v.0));
}
