//! The fuzz targets' bodies live in `targets.rs`, which
//! core/tests/fuzz_corpus.rs also includes to replay the corpus on stable.
pub mod targets;

/// Puts the default panic hook back, once. libfuzzer-sys's hook aborts on
/// every panic, even one coffer catches on purpose (sequoia 2.4 panics on
/// some malformed messages; `Opener` turns that into damage). A panic that
/// escapes a target is still caught by libfuzzer-sys and reported as a
/// crash.
pub fn keep_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}
