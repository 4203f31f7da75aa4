//! The binaries under test, built with the tests by `cargo test --workspace` or `cargo nextest
//! run --workspace` (cargo builds the binaries of each package whose integration tests it builds;
//! the demo script builds its own).

use std::path::PathBuf;

/// `target/<profile>/` of this test (or of the demo binary).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // Tests run from target/<profile>/deps/, binaries (the demo) from target/<profile>/.
    let mut dir = exe.parent().expect("executable has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("deps has a parent");
    }
    dir.to_owned()
}

/// Path of a workspace binary in the same target directory and profile as this test.
pub fn path(name: &str) -> PathBuf {
    let bin = profile_dir().join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the binaries first (`cargo test --workspace --no-run`)",
        bin.display()
    );
    bin
}

pub fn proxy() -> PathBuf {
    path("gembok-proxy")
}

/// The FIPS build of the proxy, where the test command builds it (`cargo build -p gembok-proxy
/// --features fips --target-dir target/fips`: its own target directory, so that the module's
/// aws-lc-rs does not replace the one every other binary links): `target/fips/<profile>/`.
/// `None`, with a note on stderr, when it has not been built; the test command sets
/// `GEMBOK_TEST_FIPS=1`, which makes that a failure instead (a test that needs it then cannot
/// pass by skipping).
pub fn fips_proxy() -> Option<PathBuf> {
    let found = fips_proxy_built();
    if found.is_none() {
        assert!(
            std::env::var_os("GEMBOK_TEST_FIPS").is_none_or(|v| v != "1"),
            "GEMBOK_TEST_FIPS=1 but target/fips has no gembok-proxy: build it with `cargo \
             build -p gembok-proxy --features fips --target-dir target/fips`"
        );
        eprintln!("skipped: the FIPS build of gembok-proxy is not in target/fips");
    }
    found
}

fn fips_proxy_built() -> Option<PathBuf> {
    let dir = profile_dir();
    let profile = dir.file_name().expect("a profile directory");
    let target = dir.parent().expect("the target directory");
    let bin = target.join("fips").join(profile).join("gembok-proxy");
    bin.exists().then_some(bin)
}
