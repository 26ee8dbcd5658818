//! Replays the committed fuzz corpus and every past finding on stable, through
//! the same bodies the fuzz targets run.

use std::fs;
use std::path::Path;

use sockloop::codec::fuzz;

/// Runs `body` on every file under `fuzz/corpus/<target>/` and
/// `fuzz/regressions/<target>/`; returns how many it ran.
fn replay(target: &str, body: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable corpus dir").path();
            let data = fs::read(&path).expect("readable corpus file");
            println!("{}", path.display());
            body(&data);
            count += 1;
        }
    }
    count
}

#[test]
fn length_corpus() {
    assert!(replay("length", fuzz::length) > 0, "seed corpus missing");
}

#[test]
fn delimited_corpus() {
    assert!(
        replay("delimited", fuzz::delimited) > 0,
        "seed corpus missing"
    );
}

#[test]
fn fixed_corpus() {
    assert!(replay("fixed", fuzz::fixed) > 0, "seed corpus missing");
}
