//! Replays the checked-in fuzz corpus (`fuzz/corpus/TARGET/`) through the
//! same entry points the fuzzer drives, so any input that once crashed a
//! parser, and everything the fuzzer learned to reach, stays covered by
//! every test run, without libFuzzer or a nightly compiler.

use std::path::Path;

#[test]
fn every_corpus_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in pfx_fuzz::TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        inputs.sort();
        assert!(inputs.len() >= 3, "{}: corpus too small", dir.display());
        for input in inputs {
            let data = std::fs::read(&input).expect("read corpus input");
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
