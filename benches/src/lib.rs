//! gembok-bench (filled by the benchmark issue).
