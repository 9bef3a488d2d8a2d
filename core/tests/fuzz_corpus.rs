//! Replays fuzz/corpus/<target>/ (seeds and every input cargo-fuzz kept,
//! crashes found included once fixed) through the fuzz targets' bodies on
//! stable Rust, so CI proves none of them panics again. Fuzzing itself:
//! `cargo +nightly fuzz run <target>` in fuzz/ (see fuzz/README.md).

#[path = "../../fuzz/src/targets.rs"]
mod targets;

use std::path::Path;

#[test]
fn every_corpus_input_is_decoded_or_refused_without_panicking() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for (name, target) in targets::TARGETS {
        let dir = corpus.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut inputs = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus input");
            let replay = std::panic::catch_unwind(|| target(&data));
            assert!(replay.is_ok(), "{name}: {} panicked", path.display());
            inputs += 1;
        }
        assert!(inputs > 0, "{name}: empty corpus");
        total += inputs;
    }
    eprintln!("replayed {total} corpus inputs");
}
