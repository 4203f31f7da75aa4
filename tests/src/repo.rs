//! The repository the tests run in, and reading its committed Kubernetes fixtures.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

/// The repository's top directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The decoded `data.<key>` of a Secret (parsed from YAML or JSON); a missing key is empty.
pub fn secret_data(secret: &Value, key: &str) -> Vec<u8> {
    let b64 = secret["data"][key].as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| {
            let meta = &secret["metadata"];
            panic!(
                "Secret {}/{}: data.{key}: {e}",
                meta["namespace"], meta["name"]
            )
        })
}
