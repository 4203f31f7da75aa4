//! The binaries under test, built by `cargo build --bins` (the test command does that first).

use std::path::PathBuf;

/// Path of a workspace binary in the same target directory and profile as this test.
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>  →  target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`)",
        bin.display()
    );
    bin
}

pub fn proxy() -> PathBuf {
    path("gembok-proxy")
}
