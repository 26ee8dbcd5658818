//! Replays the committed fuzz corpus and every past finding on stable, through
//! the same bodies the fuzz targets run; and checks that the fuzz crate's own
//! lock file still fits the library.

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

#[test]
fn proxy_corpus() {
    assert!(replay("proxy", fuzz::proxy) > 0, "seed corpus missing");
}

#[test]
fn client_hello_corpus() {
    assert!(
        replay("client_hello", fuzz::client_hello) > 0,
        "seed corpus missing"
    );
}

#[test]
fn resp_corpus() {
    assert!(replay("resp", fuzz::resp) > 0, "seed corpus missing");
}

/// `fuzz/` is a workspace of its own, with its own `Cargo.lock`. When the
/// library gains a dependency, that lock file lacks it, and the next `cargo
/// fuzz build` rewrites the committed file.
#[test]
fn fuzz_lock_file_lists_every_dependency_of_the_library() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let mut wanted: Vec<&str> = manifest
        .lines()
        .skip_while(|line| line.trim() != "[dependencies]")
        .skip(1)
        .take_while(|line| !line.starts_with('['))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name.trim()))
        .filter(|name| !name.starts_with('#'))
        .collect();
    let lock = fs::read_to_string(root.join("fuzz/Cargo.lock")).expect("fuzz/Cargo.lock");
    let entry = lock
        .split("[[package]]")
        .find(|entry| entry.trim_start().starts_with("name = \"sockloop\"\n"))
        .expect("sockloop in fuzz/Cargo.lock");
    // Each dependency is `"name"`, or `"name version"` when two versions are locked.
    let mut locked: Vec<&str> = entry
        .lines()
        .filter_map(|line| line.trim().strip_prefix('"'))
        .filter_map(|dep| dep.split(['"', ' ']).next())
        .collect();
    wanted.sort_unstable();
    locked.sort_unstable();
    assert_eq!(
        locked, wanted,
        "fuzz/Cargo.lock is stale: run `cargo +nightly fuzz build` and commit it"
    );
}
