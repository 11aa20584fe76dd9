//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`: seeds, the minimized
//! grown corpus and every crash reproducer that was fixed) through the fuzz targets'
//! bodies on stable, so CI keeps guarding what fuzzing found without nightly.

use std::path::Path;
use std::time::Instant;

#[test]
fn every_corpus_file_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let started = Instant::now();
    let mut total = 0;
    for (name, target) in weir_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for target {name}");
        for file in &files {
            let data = std::fs::read(file).expect("corpus file");
            // A panic names the file: rerun it with `cargo fuzz run <target> <file>`.
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", file.display());
        }
        total += files.len();
    }
    eprintln!("replayed {total} corpus files in {:?}", started.elapsed());
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    for (name, _) in weir_fuzz::TARGETS {
        assert!(
            targets.join(format!("{name}.rs")).is_file(),
            "fuzz/fuzz_targets/{name}.rs missing"
        );
    }
}
