//! `allow-san` patterns: which peer identities a listener accepts. One implementation for both
//! binaries: the proxy matches client certificates with it, and the injector validates the
//! patterns in pod annotations with it at admission, so a pattern the proxy would refuse never
//! reaches a sidecar.
//!
//! A pattern is either a DNS name (`*.ecommerce.svc.cluster.local`) matched against the peer's
//! DNS SANs, or a URI (`spiffe://cluster.local/ns/ecommerce/sa/*`) matched against its URI SANs.
//! `*` stands for exactly one whole DNS label or URI path segment, never part of one, so
//! `spiffe://td/ns/a/sa/*` cannot match `spiffe://td/ns/a/sa/x/y`.
//!
//! A list can also live in a file (the proxy's `allow-san-file=PATH`, usually a mounted
//! ConfigMap): one pattern per line, blank lines and `#` comments skipped ([`parse_list`]). Such
//! a file is read and checked with the certificates on every reload ([`AllowList`] in
//! [`Material`](crate::Material)), so a bad edit keeps the last good list.

use std::fmt;
use std::path::PathBuf;

use crate::material::LeafInfo;

/// One `allow-san` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanPattern {
    kind: Kind,
    /// Lower-cased for DNS; as given for URIs (paths are case-sensitive).
    segments: Vec<String>,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dns,
    /// The scheme and authority must match exactly; the path is matched per segment.
    Uri,
}

/// Why a pattern is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("empty pattern")]
    Empty,
    #[error("`*` must be a whole label or path segment in `{0}`")]
    PartialWildcard(String),
    #[error("URI pattern `{0}` needs a scheme and an authority (e.g. spiffe://cluster.local/...)")]
    BadUri(String),
    #[error("`{0}` is not a DNS name pattern (letters, digits, '-', '.', '*')")]
    BadDns(String),
    #[error("`{0}` has an empty DNS label (a leading, trailing or doubled '.')")]
    EmptyLabel(String),
    #[error("`{0}` has an empty path segment (a doubled or trailing '/')")]
    EmptySegment(String),
    #[error(
        "`{0}` admits too much: a DNS pattern needs two fixed labels after its last `*` \
         (e.g. `*.ecommerce.svc.cluster.local`, not `*` or `*.com`)"
    )]
    TooBroad(String),
}

/// The patterns of one allow-san file, as of the last good reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    /// The path as configured.
    pub path: PathBuf,
    pub patterns: Vec<SanPattern>,
}

/// Why the text of an allow-san file is refused (every bad line at once).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListError {
    #[error("not UTF-8 text")]
    NotText,
    #[error("{}", .0.iter().map(|(line, e)| format!("line {line}: {e}")).collect::<Vec<_>>().join("; "))]
    Patterns(Vec<(usize, PatternError)>),
}

/// Parses the text of an allow-san file: one pattern per line, surrounding whitespace trimmed,
/// blank lines and lines starting with `#` skipped. A file with no pattern is a valid list that
/// admits nobody: emptying the list is how an operator cuts every caller off at once, and
/// refusing it would keep the callers they meant to cut off.
pub fn parse_list(bytes: &[u8]) -> Result<Vec<SanPattern>, ListError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ListError::NotText)?;
    let (mut patterns, mut bad) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match SanPattern::parse(line) {
            Ok(p) => patterns.push(p),
            Err(e) => bad.push((i + 1, e)),
        }
    }
    if !bad.is_empty() {
        return Err(ListError::Patterns(bad));
    }
    Ok(patterns)
}

impl SanPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let (kind, segments) = match text.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                if scheme.is_empty() || authority.is_empty() || authority.contains('*') {
                    return Err(PatternError::BadUri(text.to_owned()));
                }
                // A certificate's URI never has an empty segment worth matching: a pattern with
                // one is a typo that would admit nobody (or, as `ns//sa`, not whom it says).
                // Without any '/', the pattern is the bare authority (one empty path).
                if rest.contains('/') && path.split('/').any(str::is_empty) {
                    return Err(PatternError::EmptySegment(text.to_owned()));
                }
                let mut segments = vec![format!(
                    "{}://{}",
                    scheme.to_ascii_lowercase(),
                    authority.to_ascii_lowercase()
                )];
                segments.extend(path.split('/').map(str::to_owned));
                (Kind::Uri, segments)
            }
            None => {
                let valid = text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*'));
                if !valid {
                    return Err(PatternError::BadDns(text.to_owned()));
                }
                let labels: Vec<String> = text
                    .to_ascii_lowercase()
                    .split('.')
                    .map(str::to_owned)
                    .collect();
                // Certificates carry no empty labels (nor a trailing dot): such a pattern could
                // never match, which is never what was meant.
                if labels.iter().any(String::is_empty) {
                    return Err(PatternError::EmptyLabel(text.to_owned()));
                }
                // An allow-list entry of `*` or `*.com` admits any name (under a public suffix):
                // never what was meant. Two fixed labels after the last wildcard need no list of
                // public suffixes and still allow `*.example.com` or `*.ns.svc.cluster.local`.
                if let Some(last) = labels.iter().rposition(|l| l == "*")
                    && labels.len() - last - 1 < 2
                {
                    return Err(PatternError::TooBroad(text.to_owned()));
                }
                (Kind::Dns, labels)
            }
        };
        if segments.iter().any(|s| s.contains('*') && s != "*") {
            return Err(PatternError::PartialWildcard(text.to_owned()));
        }
        Ok(Self {
            kind,
            segments,
            text: text.to_owned(),
        })
    }

    /// Whether the certificate's SANs satisfy this pattern.
    pub fn matches(&self, leaf: &LeafInfo) -> bool {
        match self.kind {
            Kind::Dns => leaf.dns_names.iter().any(|name| {
                let name = name.to_ascii_lowercase();
                segments_match(&self.segments, name.split('.'))
            }),
            Kind::Uri => leaf.uris.iter().any(|uri| match uri.split_once("://") {
                Some((scheme, rest)) => {
                    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                    let head = format!(
                        "{}://{}",
                        scheme.to_ascii_lowercase(),
                        authority.to_ascii_lowercase()
                    );
                    head == self.segments[0] && segments_match(&self.segments[1..], path.split('/'))
                }
                None => false,
            }),
        }
    }
}

fn segments_match<'a>(pattern: &[String], mut name: impl Iterator<Item = &'a str>) -> bool {
    for want in pattern {
        match name.next() {
            Some(got) if want == "*" && !got.is_empty() => {}
            Some(got) if got == want => {}
            _ => return false,
        }
    }
    name.next().is_none()
}

impl fmt::Display for SanPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn a_list_file_has_one_pattern_per_line_and_every_bad_line_is_named() {
        let text = b"# who may call payment\n\n  spiffe://cluster.local/ns/shop/sa/checkout  \n*.shop.svc.cluster.local\n";
        let list = parse_list(text).unwrap();
        assert_eq!(
            list.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "spiffe://cluster.local/ns/shop/sa/checkout",
                "*.shop.svc.cluster.local"
            ]
        );
        let err = parse_list(b"ok.shop.svc\n*.com\n# fine\nspiffe://td/a*\n").unwrap_err();
        assert_eq!(
            err,
            ListError::Patterns(vec![
                (2, PatternError::TooBroad("*.com".into())),
                (4, PatternError::PartialWildcard("spiffe://td/a*".into())),
            ])
        );
        assert!(err.to_string().starts_with("line 2: "), "{err}");
        assert!(err.to_string().contains("; line 4: "), "{err}");
        assert_eq!(parse_list(b"# nobody\n\n"), Ok(vec![]));
        assert_eq!(parse_list(b""), Ok(vec![]));
        assert_eq!(parse_list(b"\xff\xfe"), Err(ListError::NotText));
    }

    fn leaf(dns: &[&str], uris: &[&str]) -> LeafInfo {
        LeafInfo {
            serial: "01".into(),
            subject: String::new(),
            common_name: None,
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            uris: uris.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn allows(pattern: &str, dns: &[&str], uris: &[&str]) -> bool {
        SanPattern::parse(pattern)
            .unwrap()
            .matches(&leaf(dns, uris))
    }

    #[test]
    fn dns_patterns_match_whole_labels_case_insensitively() {
        let name = ["Payment.Ecommerce.svc.cluster.local"];
        assert!(allows("payment.ecommerce.svc.cluster.local", &name, &[]));
        assert!(allows("*.ecommerce.svc.cluster.local", &name, &[]));
        assert!(!allows("*.svc.cluster.local", &name, &[]));
        assert!(!allows(
            "*.ecommerce.svc.cluster.local",
            &["ecommerce.svc.cluster.local"],
            &[]
        ));
        assert!(!allows("payment.ecommerce.svc", &name, &[]));
        // A DNS pattern never matches a URI SAN and vice versa.
        assert!(!allows(
            "payment.ecommerce.svc.cluster.local",
            &[],
            &["spiffe://payment.ecommerce.svc.cluster.local"]
        ));
    }

    #[test]
    fn uri_patterns_match_one_path_segment_per_star() {
        let id = ["spiffe://cluster.local/ns/ecommerce/sa/payment"];
        assert!(allows(
            "spiffe://cluster.local/ns/ecommerce/sa/payment",
            &[],
            &id
        ));
        assert!(allows("spiffe://cluster.local/ns/ecommerce/sa/*", &[], &id));
        assert!(allows("spiffe://cluster.local/ns/*/sa/payment", &[], &id));
        assert!(!allows(
            "spiffe://cluster.local/ns/ecommerce/sa/auth",
            &[],
            &id
        ));
        assert!(!allows("spiffe://cluster.local/ns/ecommerce/*", &[], &id));
        assert!(!allows("spiffe://other.domain/ns/ecommerce/sa/*", &[], &id));
        assert!(!allows(
            "spiffe://cluster.local/ns/ecommerce/sa/*",
            &[],
            &["spiffe://cluster.local/ns/ecommerce/sa/a/b"]
        ));
        assert!(!allows(
            "spiffe://cluster.local/ns/ecommerce/sa/*",
            &[],
            &["spiffe://cluster.local/ns/ecommerce/sa/"]
        ));
    }

    #[test]
    fn rejects_malformed_patterns() {
        assert_eq!(SanPattern::parse(""), Err(PatternError::Empty));
        assert!(matches!(
            SanPattern::parse("pay*.svc"),
            Err(PatternError::PartialWildcard(_))
        ));
        assert!(matches!(
            SanPattern::parse("spiffe:///ns/x"),
            Err(PatternError::BadUri(_))
        ));
        assert!(matches!(
            SanPattern::parse("spiffe://*/ns/x"),
            Err(PatternError::BadUri(_))
        ));
        assert!(matches!(
            SanPattern::parse("bad name"),
            Err(PatternError::BadDns(_))
        ));
    }

    #[test]
    fn rejects_empty_labels_and_path_segments() {
        for pattern in ["foo..com", ".foo.com", "foo.com.", ".", "*..com"] {
            assert_eq!(
                SanPattern::parse(pattern),
                Err(PatternError::EmptyLabel(pattern.to_owned())),
                "{pattern}"
            );
        }
        for pattern in [
            "spiffe://td/ns//sa/x",
            "spiffe://td/ns/a/sa/",
            "spiffe://td/",
            "spiffe://td//ns",
        ] {
            assert_eq!(
                SanPattern::parse(pattern),
                Err(PatternError::EmptySegment(pattern.to_owned())),
                "{pattern}"
            );
        }
        let err = SanPattern::parse("foo..com").unwrap_err().to_string();
        assert_eq!(
            err,
            "`foo..com` has an empty DNS label (a leading, trailing or doubled '.')"
        );
        // Still accepted: whole-label wildcards and a bare trust domain.
        for pattern in ["spiffe://td", "spiffe://td/ns/*/sa/*"] {
            assert!(SanPattern::parse(pattern).is_ok(), "{pattern}");
        }
    }

    #[test]
    fn refuses_dns_wildcards_that_admit_nearly_anyone() {
        for pattern in ["*", "*.com", "*.*", "*.*.com", "api.*.com"] {
            assert_eq!(
                SanPattern::parse(pattern),
                Err(PatternError::TooBroad(pattern.to_owned())),
                "{pattern}"
            );
        }
        for pattern in [
            "*.example.com",
            "*.*.example.com",
            "api.*.example.com",
            "*.ecommerce.svc.cluster.local",
            "localhost",
            "com",
        ] {
            assert!(SanPattern::parse(pattern).is_ok(), "{pattern}");
        }
    }
}
