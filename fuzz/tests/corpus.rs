//! Replays every committed corpus input of every fuzz target on the stable toolchain.
//!
//! **Invariants checked**: each target's invariants (see `aof2_fuzz`) on every file in
//! `corpus/<target>/`; a target with an empty or missing corpus fails the test, so a
//! new target cannot land without seeds.

use std::path::Path;

#[test]
fn every_target_replays_its_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in aof2_fuzz::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("corpus directory {} missing: {error}", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("readable corpus entry").path();
            let data = std::fs::read(&path)
                .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
            target(&data);
            count += 1;
        }
        assert!(count > 0, "corpus of {name} is empty");
        println!("{name}: replayed {count} inputs");
    }
}
