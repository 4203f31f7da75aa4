//! The five C math functions the proxy's dependencies call, defined here in Rust (the `libm`
//! crate, a port of musl's), so a glibc build of `gembok-proxy` never loads glibc's `libm.so`.
//!
//! Who calls them: metrics-exporter-prometheus' summary and histogram code (`exp`, `log`,
//! `log1p`, `log2`) and one spot in tokio (`pow`). Why it matters: Rust links with full RELRO (`-z now`), so the
//! loader maps libm and runs the IFUNC resolvers of those five functions at start-up, and each
//! page it touches brings 64 KiB of libm with it (fault-around). That was 0.5 MiB of an idle
//! sidecar's 8.5 MiB RSS, for five functions (`benches/tuning.md`).
//!
//! The linker binds the calls to these definitions, finds nothing else wanted from libm and,
//! with `--as-needed` (rustc's default), leaves it out of the binary's `NEEDED` list. The
//! black-box test `metrics_follow_prometheus_conventions` checks that the running proxy maps no
//! libm.
//!
//! Only for glibc targets: musl's static libc would provide the same symbols itself.

// Exporting a symbol under its C name is an unsafe attribute: it must not clash with another
// definition. glibc defines these only in libm, which this module replaces.
#![allow(unsafe_code)]

/// `e^x`.
#[unsafe(no_mangle)]
pub extern "C" fn exp(x: f64) -> f64 {
    libm::exp(x)
}

/// Natural logarithm.
#[unsafe(no_mangle)]
pub extern "C" fn log(x: f64) -> f64 {
    libm::log(x)
}

/// `ln(1 + x)`, exact for small `x`.
#[unsafe(no_mangle)]
pub extern "C" fn log1p(x: f64) -> f64 {
    libm::log1p(x)
}

/// Base-2 logarithm.
#[unsafe(no_mangle)]
pub extern "C" fn log2(x: f64) -> f64 {
    libm::log2(x)
}

/// `x^y`.
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    use std::f64::consts::{E, LN_2, SQRT_2};
    use std::hint::black_box as opaque; // constant arguments would be folded at compile time

    /// Within `ulps` units in the last place of `want`.
    fn close(got: f64, want: f64, ulps: u64) -> bool {
        got == want || got.to_bits().abs_diff(want.to_bits()) <= ulps
    }

    // `f64::exp` and friends compile to calls of these C names, so they exercise the definitions
    // above (in this test binary as in the proxy).
    #[test]
    fn the_std_methods_reach_correct_results() {
        assert!(close(opaque(1f64).exp(), E, 1));
        assert_eq!(opaque(0f64).exp(), 1.0);
        assert_eq!(opaque(f64::NEG_INFINITY).exp(), 0.0);
        assert_eq!(opaque(1000f64).exp(), f64::INFINITY);
        assert!(close(opaque(E).ln(), 1.0, 1));
        assert!(close(opaque(2f64).ln(), LN_2, 1));
        assert_eq!(opaque(0f64).ln(), f64::NEG_INFINITY);
        assert!(opaque(-1f64).ln().is_nan());
        let tiny = opaque(1e-12f64).ln_1p();
        assert!(close(tiny, 1e-12 - 5e-25, 2), "{tiny:e}");
        assert_eq!(opaque(1024f64).log2(), 10.0);
        assert!(close(opaque(3f64).log2(), 1.584_962_500_721_156_2, 1));
        assert_eq!(opaque(2f64).powf(opaque(10.0)), 1024.0);
        assert!(close(opaque(2f64).powf(opaque(0.5)), SQRT_2, 1));
        assert_eq!(opaque(0f64).powf(opaque(0.0)), 1.0);
    }
}
