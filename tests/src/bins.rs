//! The binaries under test, built by `cargo build --workspace --bins` (the test command and the
//! demo script do that first).

use std::path::PathBuf;

/// Path of a workspace binary in the same target directory and profile as this test.
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // Tests run from target/<profile>/deps/, binaries (the demo) from target/<profile>/.
    let mut dir = exe.parent().expect("executable has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("deps has a parent");
    }
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
