//! Helpers shared by the crate's unit tests.

use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};

/// The seed of every property run, so that a failure seen once (in CI or here) comes back
/// with the same command. `PROPTEST_RNG_SEED=<u64>` picks another one, and
/// `PROPTEST_CASES=<n>` another number of cases, to explore further by hand.
pub const PROPTEST_SEED: u64 = 0x636f_7272_616c; // "corral"

/// A proptest runner for `cases` cases: seeded (see [`PROPTEST_SEED`]), ChaCha (the same
/// sequence on every platform), and without failure-persistence files (a failure prints
/// its minimal input; the fixed seed replays it).
pub fn seeded_runner(cases: u32) -> TestRunner {
    let env = Config::default(); // reads the PROPTEST_* variables
    let config = Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            env.cases
        } else {
            cases
        },
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: match env.rng_seed {
            RngSeed::Fixed(seed) => RngSeed::Fixed(seed),
            RngSeed::Random => RngSeed::Fixed(PROPTEST_SEED),
        },
        failure_persistence: None,
        ..env
    };
    TestRunner::new(config)
}
