//! gembok-proxy.
