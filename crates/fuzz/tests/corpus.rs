//! Replays the checked-in fuzz inputs through the same entry points the
//! fuzzer drives, without libFuzzer or a nightly compiler: the corpus
//! (`fuzz/corpus/TARGET/`, what the fuzzer learned to reach, minimised) and
//! the regressions (`fuzz/regressions/TARGET/`, inputs that once broke a
//! target, kept out of minimisation), so a fixed crash stays fixed.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("corpus entry").path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    files.sort();
    files
}

#[test]
fn every_corpus_and_regression_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in pfx_fuzz::TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        assert!(corpus.len() >= 3, "{name}: corpus too small");
        for input in corpus
            .iter()
            .chain(&inputs(&root.join("regressions").join(name)))
        {
            let data = match std::fs::read(input) {
                Ok(data) => data,
                // A fuzzer running meanwhile replaced it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", input.display()),
            };
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                panic!(
                    "{} fails: rerun it with scripts/fuzz --replay {name}",
                    input.display()
                );
            }
        }
    }
}

#[test]
fn every_target_has_a_libfuzzer_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for (name, _) in pfx_fuzz::TARGETS {
        let file = dir.join(format!("{name}.rs"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!("pfx_fuzz::{name}(")),
            "{} calls pfx_fuzz::{name}",
            file.display()
        );
    }
}
