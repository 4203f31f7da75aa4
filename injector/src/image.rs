//! Container image references, checked against the grammar container runtimes read them by
//! (`distribution/reference`, which containerd and CRI-O follow). A mistyped proxy image would
//! leave every injected pod in `ImagePullBackOff`, so it is refused where it is configured: at
//! start for `--proxy-image`, at admission for the `gembok.io/image` annotation.
//!
//! Hand-written rather than taken from oci-spec, whose parser would add fifteen crates (builder
//! and enum macros among them) and regex's Unicode tables for these few rules.

/// The longest repository name (registry included) the grammar allows.
const NAME_MAX: usize = 255;
/// The longest tag.
const TAG_MAX: usize = 128;

/// `Ok` when `reference` is an image reference as a container runtime reads it:
/// `[registry[:port]/]repository[:tag][@digest]`. Otherwise why not.
pub fn check(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("empty".to_owned());
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    // A tag follows the last ':' after the last '/' (a ':' before that is a registry's port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    check_name(name)?;
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("no repository name".to_owned());
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "the repository name is longer than {NAME_MAX} characters"
        ));
    }
    let mut parts = name.split('/').peekable();
    // The first part names a registry when more follow and it looks like a host: a dot, a port
    // or `localhost` (docker.io's rule; `gembok/gembok-proxy` is a repository on the default).
    let registry = parts.next_if(|first| {
        name.contains('/') && (first.contains(['.', ':']) || *first == "localhost")
    });
    if let Some(registry) = registry {
        check_registry(registry)?;
    } else {
        // The runtimes measure the name they pull: `docker.io/` added, and `library/` too for
        // a name of one part.
        let added = match name.contains('/') {
            true => "docker.io/".len(),
            false => "docker.io/library/".len(),
        };
        if name.len() + added > NAME_MAX {
            return Err(format!(
                "the repository name is longer than {NAME_MAX} characters once the runtime adds \
                 docker.io/ to it"
            ));
        }
        if name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(
                "a name of 64 hex digits reads as an image ID, not a repository".to_owned(),
            );
        }
    }
    for part in parts {
        check_path_component(part)?;
    }
    Ok(())
}

/// `host[:port]`: DNS labels, an IPv4 address, or an IPv6 address in brackets written in hex
/// digits and colons only, as distribution's grammar has it (`[::ffff:10.0.0.1]`, IPv4 inside
/// IPv6, parses as an address but is not a registry a runtime pulls from).
fn check_registry(registry: &str) -> Result<(), String> {
    let bad =
        || format!("the registry `{registry}` is not a host name or address with an optional port");
    let (host, port) = match registry.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, after) = bracketed.split_once(']').ok_or_else(bad)?;
            if !ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                return Err(bad());
            }
            ip.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            match after {
                "" => (None, None),
                _ => (None, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        }
        None => match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        },
    };
    if let Some(host) = host {
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(bad());
    }
    Ok(())
}

/// Lowercase letters and digits, runs of them joined by `.`, `_`, `__` or dashes.
fn check_path_component(part: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bad = || {
        format!(
            "the repository part `{part}` may hold only lowercase letters and digits, joined by \
             `.`, `_`, `__` or dashes"
        )
    };
    if part.is_empty() {
        return Err("an empty part between slashes in the repository name".to_owned());
    }
    let separators_ok = part
        .split(alnum)
        .filter(|s| !s.is_empty())
        .all(|s| matches!(s, "." | "_" | "__") || s.chars().all(|c| c == '-'));
    match part.starts_with(alnum) && part.ends_with(alnum) && separators_ok {
        true => Ok(()),
        false => Err(bad()),
    }
}

/// A word character, then up to 127 word characters, dots and dashes.
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = tag.starts_with(word)
        && tag.len() <= TAG_MAX
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    match ok {
        true => Ok(()),
        false => Err(format!(
            "the tag `{tag}` must be 1 to {TAG_MAX} letters, digits, `_`, `.` or `-`, not \
             starting with `.` or `-`"
        )),
    }
}

/// `algorithm:hex` as the runtimes verify it (go-digest): sha256, sha384 or sha512, with
/// exactly 64, 96 or 128 lowercase hex digits.
fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "the digest `{digest}` is not sha256:, sha384: or sha512: with 64, 96 or 128 \
             lowercase hex digits"
        )
    };
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let digits = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    match hex.len() == digits && hex.chars().all(lower_hex) {
        true => Ok(()),
        false => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_runtimes_accept_pass() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for good in [
            "ghcr.io/gembok/gembok-proxy:0.1.0",
            "gembok-proxy",
            "gembok/gembok-proxy:latest",
            "registry.internal:5000/sec/gembok-proxy:1.2.3-rc.1",
            "localhost/gembok-proxy",
            "localhost:5000/gembok-proxy:dev",
            "[fd00::1]:5000/gembok-proxy",
            "10.0.0.7:5000/gembok_proxy__x/a-b--c.d:V1_2",
            &format!("ghcr.io/gembok/gembok-proxy@{digest}"),
            &format!("ghcr.io/gembok/gembok-proxy:0.1.0@{digest}"),
            &format!("x@sha384:{}", "b".repeat(96)),
            &format!("x@sha512:{}", "c".repeat(128)),
            &"a".repeat(237),
            &format!("ghcr.io/{}", "a".repeat(247)),
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn mistakes_are_refused_saying_which_part_is_wrong() {
        let long_tag = format!("x:{}", "1".repeat(129));
        let long_name = format!("{}/x", "a".repeat(255));
        for (bad, part) in [
            ("", "empty"),
            ("ghcr.io/gembok/gembok-proxy:0.1.0 ", "tag"),
            ("ghcr.io/gembok/gembok-proxy:0.1.0\n", "tag"),
            ("ghcr.io/Gembok/gembok-proxy", "repository part `Gembok`"),
            ("ghcr.io/gembok/gembok-proxy:", "tag"),
            ("ghcr.io/gembok/gembok-proxy::0.1", "repository part"),
            ("ghcr.io/gembok/gembok-proxy:.1", "tag"),
            (&long_tag, "tag"),
            ("ghcr.io/gembok/gembok-proxy@sha256:abc", "digest"),
            ("ghcr.io/gembok/gembok-proxy@abc", "digest"),
            (&format!("x@sha256:{}", "A".repeat(64)), "digest"),
            (&format!("x@sha256:{}", "c".repeat(32)), "digest"),
            (&format!("x@sha512:{}", "a".repeat(64)), "digest"),
            (&format!("x@md5:{}", "c".repeat(32)), "digest"),
            (&format!("x@SHA256:{}", "a".repeat(64)), "digest"),
            (&"a".repeat(240), "once the runtime adds docker.io"),
            (
                &format!("gembok/{}", "a".repeat(243)),
                "once the runtime adds docker.io",
            ),
            (&"a".repeat(64), "image ID"),
            ("https://ghcr.io/gembok/gembok-proxy", "registry"),
            ("ghcr.io//gembok-proxy", "empty part"),
            ("ghcr.io/gembok/-proxy", "repository part"),
            ("ghcr.io/gembok/proxy.", "repository part"),
            ("ghcr.io/gembok/a..b", "repository part"),
            ("ghcr.io/gembok/a___b", "repository part"),
            ("ghcr-.io/gembok/proxy", "registry"),
            ("ghcr.io:http/gembok/proxy", "registry"),
            ("[fd00::1/gembok/proxy", "registry"),
            ("[::ffff:10.0.0.1]:5000/gembok/proxy", "registry"),
            (&long_name, "longer than 255"),
            ("ghcr.io/", "empty part"),
            (":0.1.0", "no repository"),
        ] {
            let why = check(bad).expect_err(bad);
            assert!(why.contains(part), "{bad:?}: {why}");
        }
    }
}
