//! Test harness (filled by the proxy issue).
