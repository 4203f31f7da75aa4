//! The generated certificates are what the contract says and verify the way the sidecar will
//! verify them: rustls-webpki path building and a real rustls mTLS handshake across regions.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use anyhow::{Context as _, Result, anyhow};
use gembok_certs_dev::time::{Duration, OffsetDateTime};
use gembok_certs_dev::{
    Ca, DevPki, KeyType, LeafSpec, Options, Usage, Validity, layout, pki, spiffe_id,
};
use rcgen::PublicKeyData as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use x509_parser::prelude::{FromDer, X509Certificate};

use common::{certs, dns_valid, provider, sans, webpki_verify};

fn pki() -> &'static DevPki {
    static PKI: OnceLock<DevPki> = OnceLock::new();
    PKI.get_or_init(|| DevPki::generate(&Options::default()).expect("generate"))
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> X509Certificate<'a> {
    X509Certificate::from_der(der.as_ref()).expect("x509").1
}

#[test]
fn every_leaf_verifies_against_the_single_root_for_server_and_client_use() -> Result<()> {
    let pki = pki();
    let root = certs(pki.root.cert_pem())?.remove(0);
    assert_eq!(pki.regions.len(), 3);
    for region in &pki.regions {
        assert_eq!(region.services.len(), 4);
        for (svc, leaf) in &region.services {
            let chain = certs(&leaf.chain_pem)?;
            assert_eq!(chain.len(), 2, "{}/{svc}: leaf + intermediate", region.name);
            assert_eq!(certs(&leaf.ca_pem)?, vec![root.clone()]);
            for usage in [
                webpki::KeyUsage::server_auth(),
                webpki::KeyUsage::client_auth(),
            ] {
                webpki_verify(&chain, &root, usage, UnixTime::now())
                    .map_err(|e| anyhow!("{}/{svc}: {e}", region.name))?;
            }
        }
        let injector = certs(&region.injector.chain_pem)?;
        webpki_verify(
            &injector,
            &root,
            webpki::KeyUsage::server_auth(),
            UnixTime::now(),
        )?;
        // Webhook certificate is serverAuth only.
        let err = webpki_verify(
            &injector,
            &root,
            webpki::KeyUsage::client_auth(),
            UnixTime::now(),
        );
        assert!(
            err.is_err(),
            "injector certificate must not be usable as a client"
        );
    }
    Ok(())
}

#[test]
fn a_leaf_needs_its_intermediate_and_the_right_root() -> Result<()> {
    let pki = pki();
    let root = certs(pki.root.cert_pem())?.remove(0);
    let leaf = certs(
        &pki.region("eu")
            .unwrap()
            .service("payment")
            .unwrap()
            .chain_pem,
    )?;
    let alone = webpki_verify(
        &leaf[..1],
        &root,
        webpki::KeyUsage::server_auth(),
        UnixTime::now(),
    );
    assert!(
        matches!(alone, Err(webpki::Error::UnknownIssuer)),
        "{alone:?}"
    );

    let other = DevPki::generate(&Options::default())?;
    let other_root = certs(other.root.cert_pem())?.remove(0);
    let foreign = webpki_verify(
        &leaf,
        &other_root,
        webpki::KeyUsage::server_auth(),
        UnixTime::now(),
    );
    assert!(
        foreign.is_err(),
        "a leaf must not verify against another root"
    );
    Ok(())
}

#[test]
fn sans_are_exactly_the_contract_identities() -> Result<()> {
    let pki = pki();
    for region in &pki.regions {
        for (svc, leaf) in &region.services {
            let der = leaf.cert_der();
            let s = sans(&der)?;
            assert_eq!(
                s.dns,
                [
                    format!("{svc}.ecommerce.svc.cluster.local"),
                    format!("{svc}.ecommerce.svc")
                ]
            );
            assert_eq!(
                s.uri,
                [format!("spiffe://cluster.local/ns/ecommerce/sa/{svc}")]
            );
            assert_eq!((s.ip.len(), s.other), (0, 0));
            dns_valid(&der, &format!("{svc}.ecommerce.svc.cluster.local"))?;
            assert!(dns_valid(&der, "payment-x.ecommerce.svc").is_err());
        }
        let s = sans(&region.injector.cert_der())?;
        assert_eq!(
            s.dns,
            [
                "gembok-injector.gembok-system.svc",
                "gembok-injector.gembok-system.svc.cluster.local"
            ]
        );
        assert!(s.uri.is_empty());
    }
    Ok(())
}

#[test]
fn options_change_the_identities() -> Result<()> {
    let options = Options {
        regions: vec!["lab".into()],
        services: vec!["cart".into()],
        namespace: "shop".into(),
        trust_domain: "example.org".into(),
        cluster_domain: "k8s.internal".into(),
        days: 7,
        ca_days: 30,
        ..Options::default()
    };
    let pki = DevPki::generate(&options)?;
    let leaf = pki.region("lab").unwrap().service("cart").unwrap();
    let s = sans(&leaf.cert_der())?;
    assert_eq!(s.dns, ["cart.shop.svc.k8s.internal", "cart.shop.svc"]);
    assert_eq!(s.uri, ["spiffe://example.org/ns/shop/sa/cart"]);
    assert_eq!(spiffe_id("example.org", "shop", "cart"), s.uri[0]);

    let der = leaf.cert_der();
    let cert = parse(&der);
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(
        lifetime,
        7 * 86_400 + 300,
        "7 days plus the 5-minute backdate"
    );
    let root = certs(pki.root.cert_pem())?.remove(0);
    let root = parse(&root);
    let lifetime = root.validity().not_after.timestamp() - root.validity().not_before.timestamp();
    assert_eq!(lifetime, 30 * 86_400 + 300);
    Ok(())
}

#[test]
fn generate_rejects_bad_options_with_every_problem() {
    let options = Options {
        regions: vec!["US".into()],
        services: vec!["../../etc".into()],
        ..Options::default()
    };
    match DevPki::generate(&options) {
        Err(gembok_certs_dev::GenerateError::Options(problems)) => assert_eq!(problems.len(), 2),
        other => panic!("expected option problems, got {other:?}"),
    }
}

#[test]
fn ca_and_leaf_extensions() -> Result<()> {
    let pki = pki();
    let root_der = certs(pki.root.cert_pem())?.remove(0);
    let root = parse(&root_der);
    let root_name = root.subject().iter_common_name().next().unwrap().as_str()?;
    let id = root_name
        .strip_prefix(pki::ROOT_COMMON_NAME)
        .and_then(|rest| rest.strip_prefix(' '))
        .context(root_name.to_owned())?;
    assert!(
        id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{root_name}"
    );
    assert!(root.is_ca());
    assert_eq!(root.subject(), root.issuer());

    let region = pki.region("asia").unwrap();
    let inter_der = certs(region.intermediate.cert_pem())?.remove(0);
    let inter = parse(&inter_der);
    let bc = inter.basic_constraints()?.expect("basic constraints").value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = inter.key_usage()?.expect("key usage").value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert_eq!(inter.issuer(), root.subject());

    let leaf_der = region.service("auth").unwrap().cert_der();
    let leaf = parse(&leaf_der);
    assert!(!leaf.is_ca());
    let eku = leaf.extended_key_usage()?.expect("eku").value;
    assert!(eku.server_auth && eku.client_auth);
    assert_eq!(leaf.issuer(), inter.subject());
    let alg = leaf.public_key().algorithm.algorithm.to_id_string();
    assert_eq!(alg, "1.2.840.10045.2.1", "EC public key");
    let curve = leaf.public_key().algorithm.parameters.as_ref().unwrap();
    assert_eq!(
        curve.as_oid()?.to_id_string(),
        "1.2.840.10045.3.1.7",
        "P-256"
    );
    Ok(())
}

#[test]
fn serials_are_random_and_distinct() -> Result<()> {
    let pki = pki();
    let mut serials = std::collections::HashSet::new();
    for region in &pki.regions {
        for (_, leaf) in &region.services {
            let der = leaf.cert_der();
            let cert = parse(&der);
            assert_eq!(cert.raw_serial(), leaf.serial.as_slice());
            assert_eq!(leaf.serial.len(), 16);
            assert!(serials.insert(leaf.serial.clone()), "duplicate serial");
        }
    }
    Ok(())
}

#[test]
fn keys_match_their_certificates() -> Result<()> {
    let pki = pki();
    let provider = provider();
    let eu = pki.region("eu").unwrap();
    let payment = eu.service("payment").unwrap();
    let auth = eu.service("auth").unwrap();
    for leaf in [payment, auth, &eu.injector] {
        CertifiedKey::from_der(leaf.chain_der(), leaf.key_der(), &provider)
            .context("key does not match certificate")?;
        // Same check by public key bytes, through rcgen parsing the written PEM.
        let key = rcgen::KeyPair::from_pem(&leaf.key_pem)?;
        let der = leaf.cert_der();
        let cert = parse(&der);
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
    }
    let mixed = CertifiedKey::from_der(payment.chain_der(), auth.key_der(), &provider);
    assert!(mixed.is_err(), "mismatched key must be detected");

    let inter_key = rcgen::KeyPair::from_pem(&eu.intermediate.key_pem())?;
    let inter_der = certs(eu.intermediate.cert_pem())?.remove(0);
    assert_eq!(
        parse(&inter_der).public_key().raw,
        inter_key.subject_public_key_info().as_slice()
    );
    Ok(())
}

#[test]
fn expired_and_not_yet_valid_leaves_really_are() -> Result<()> {
    let pki = pki();
    let eu = &pki.region("eu").unwrap().intermediate;
    let root = pki.root.root_der();
    let now = OffsetDateTime::now_utc();

    let expired = eu.issue(
        &LeafSpec::workload("payment", "ecommerce", "cluster.local", "cluster.local")
            .validity(Validity::expired()),
    )?;
    let der = expired.cert_der();
    let cert = parse(&der);
    assert!(cert.validity().not_after.to_datetime() < now - Duration::hours(23));
    let err = webpki_verify(
        &expired.chain_der(),
        &root,
        webpki::KeyUsage::server_auth(),
        UnixTime::now(),
    );
    assert!(
        matches!(err, Err(webpki::Error::CertExpired { .. })),
        "{err:?}"
    );

    let future = eu.issue(
        &LeafSpec::new("f")
            .dns("f.test")
            .validity(Validity::not_yet_valid()),
    )?;
    let err = webpki_verify(
        &future.chain_der(),
        &root,
        webpki::KeyUsage::server_auth(),
        UnixTime::now(),
    );
    assert!(
        matches!(err, Err(webpki::Error::CertNotValidYet { .. })),
        "{err:?}"
    );

    let start = now - Duration::days(10);
    let end = now - Duration::days(3);
    let window = eu.issue(&LeafSpec::new("w").validity(Validity::between(start, end)))?;
    let der = window.cert_der();
    let cert = parse(&der);
    assert_eq!(
        cert.validity().not_before.timestamp(),
        start.unix_timestamp()
    );
    assert_eq!(cert.validity().not_after.timestamp(), end.unix_timestamp());
    Ok(())
}

#[test]
fn extra_leaves_with_arbitrary_sans_key_types_and_usages() -> Result<()> {
    let pki = pki();
    let us = &pki.region("us").unwrap().intermediate;
    let root = pki.root.root_der();

    let rsa = us.issue(
        &LeafSpec::new("rsa")
            .dns("localhost")
            .uri("spiffe://cluster.local/ns/test/sa/rsa")
            .ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .key_type(KeyType::Rsa2048),
    )?;
    let der = rsa.cert_der();
    let cert = parse(&der);
    assert_eq!(
        cert.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.1"
    );
    assert_eq!(cert.public_key().parsed()?.key_size(), 2048);
    let s = sans(&der)?;
    assert_eq!(
        (s.dns, s.uri, s.ip),
        (
            vec!["localhost".to_string()],
            vec!["spiffe://cluster.local/ns/test/sa/rsa".to_string()],
            vec![vec![127, 0, 0, 1]],
        )
    );
    assert!(
        rsa.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8"
    );
    CertifiedKey::from_der(rsa.chain_der(), rsa.key_der(), &provider())?;
    webpki_verify(
        &rsa.chain_der(),
        &root,
        webpki::KeyUsage::server_auth(),
        UnixTime::now(),
    )?;

    let p384 = us.issue(&LeafSpec::new("p384").key_type(KeyType::EcdsaP384))?;
    CertifiedKey::from_der(p384.chain_der(), p384.key_der(), &provider())?;

    let client_only = us.issue(&LeafSpec::new("c").usage(Usage::Client))?;
    let chain = client_only.chain_der();
    webpki_verify(
        &chain,
        &root,
        webpki::KeyUsage::client_auth(),
        UnixTime::now(),
    )?;
    assert!(
        webpki_verify(
            &chain,
            &root,
            webpki::KeyUsage::server_auth(),
            UnixTime::now()
        )
        .is_err()
    );

    // Straight from the root: no intermediate in the chain.
    let direct = pki.root.issue(&LeafSpec::new("d").dns("d.test"))?;
    assert_eq!(direct.chain_der().len(), 1);
    webpki_verify(
        &direct.chain_der(),
        &root,
        webpki::KeyUsage::server_auth(),
        UnixTime::now(),
    )?;
    Ok(())
}

#[test]
fn a_ca_loaded_from_written_files_keeps_issuing() -> Result<()> {
    let pki = pki();
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    pki.write(&out, gembok_certs_dev::Existing::Refuse)?;
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p);

    let inter_dir = layout::intermediate_dir(&out, "eu");
    let eu = Ca::from_pem(
        &read(inter_dir.join(layout::CERT))?,
        &read(inter_dir.join(layout::KEY))?,
        Some(&read(inter_dir.join(layout::CA))?),
    )?;
    let leaf = eu.issue(&LeafSpec::new("late").dns("late.test"))?;
    assert_eq!(leaf.chain_der().len(), 2);
    let root = pki.root.root_der();
    webpki_verify(
        &leaf.chain_der(),
        &root,
        webpki::KeyUsage::server_auth(),
        UnixTime::now(),
    )?;

    let root_dir = layout::root_dir(&out);
    let loaded_root = Ca::from_pem(
        &read(root_dir.join(layout::ROOT_CERT))?,
        &read(root_dir.join(layout::ROOT_KEY))?,
        None,
    )?;
    assert!(loaded_root.is_root());
    let ny = loaded_root.intermediate("new region", Validity::days(30))?;
    let leaf = ny.issue(&LeafSpec::new("n").dns("n.test"))?;
    webpki_verify(
        &leaf.chain_der(),
        &root,
        webpki::KeyUsage::server_auth(),
        UnixTime::now(),
    )?;
    Ok(())
}

/// Drives a client and a server connection against each other in memory until both finish the
/// handshake or one fails.
fn handshake(client: ClientConfig, server: ServerConfig, name: &str) -> Result<ServerConnection> {
    let mut c = ClientConnection::new(Arc::new(client), ServerName::try_from(name.to_owned())?)?;
    let mut s = ServerConnection::new(Arc::new(server))?;
    for _ in 0..16 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf)?;
        s.read_tls(&mut buf.as_slice())?;
        s.process_new_packets().context("server")?;
        let mut buf = Vec::new();
        s.write_tls(&mut buf)?;
        c.read_tls(&mut buf.as_slice())?;
        c.process_new_packets().context("client")?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(s);
        }
    }
    Err(anyhow!("handshake did not finish"))
}

fn roots(root: CertificateDer<'static>) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    store.add(root).expect("root");
    Arc::new(store)
}

fn mtls_configs(
    client_leaf: &gembok_certs_dev::Leaf,
    server_leaf: &gembok_certs_dev::Leaf,
    ca: CertificateDer<'static>,
) -> Result<(ClientConfig, ServerConfig)> {
    let p = provider();
    let client = ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca.clone()))
        .with_client_auth_cert(client_leaf.chain_der(), client_leaf.key_der())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), p.clone()).build()?;
    let server = ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(server_leaf.chain_der(), server_leaf.key_der())?;
    Ok((client, server))
}

#[test]
fn cross_region_mtls_handshake_with_only_the_root() -> Result<()> {
    let pki = pki();
    // product-catalog in eu calls payment in us; each side trusts only ca.crt.
    let client_leaf = pki
        .region("eu")
        .unwrap()
        .service("product-catalog")
        .unwrap();
    let server_leaf = pki.region("us").unwrap().service("payment").unwrap();
    let ca = certs(&client_leaf.ca_pem)?.remove(0);
    let (client, server) = mtls_configs(client_leaf, server_leaf, ca)?;
    let conn = handshake(client, server, "payment.ecommerce.svc.cluster.local")?;
    let peer = conn
        .peer_certificates()
        .context("client presented no certificate")?;
    assert_eq!(
        peer.len(),
        2,
        "client sends leaf + its regional intermediate"
    );
    let s = sans(&peer[0])?;
    assert_eq!(
        s.uri,
        ["spiffe://cluster.local/ns/ecommerce/sa/product-catalog"]
    );
    Ok(())
}

#[test]
fn handshake_fails_for_wrong_name_foreign_root_or_expired_peer() -> Result<()> {
    let pki = pki();
    let eu = pki.region("eu").unwrap();
    let client_leaf = eu.service("auth").unwrap();
    let server_leaf = eu.service("payment").unwrap();
    let ca = pki.root.root_der();

    let (client, server) = mtls_configs(client_leaf, server_leaf, ca.clone())?;
    let wrong = handshake(client, server, "auth.ecommerce.svc.cluster.local");
    let msg = format!("{:#}", wrong.unwrap_err());
    assert!(msg.contains("not valid for name"), "{msg}");

    let other = DevPki::generate(&Options {
        regions: vec!["eu".into()],
        services: vec!["auth".into()],
        ..Options::default()
    })?;
    let stranger = other.region("eu").unwrap().service("auth").unwrap();
    let (client, server) = mtls_configs(stranger, server_leaf, ca.clone())?;
    let foreign = handshake(client, server, "payment.ecommerce.svc.cluster.local");
    let msg = format!("{:#}", foreign.unwrap_err());
    // Each dev PKI names its CAs with an id of its own: a stranger from another run is an
    // unknown issuer (not a bad signature by "our" root of the same name), and refused.
    assert!(
        msg.starts_with("server:") && msg.contains("UnknownIssuer"),
        "{msg}"
    );

    let expired = eu.intermediate.issue(
        &LeafSpec::workload("auth", "ecommerce", "cluster.local", "cluster.local")
            .validity(Validity::expired()),
    )?;
    let (client, server) = mtls_configs(&expired, server_leaf, ca)?;
    let late = handshake(client, server, "payment.ecommerce.svc.cluster.local");
    let msg = format!("{:#}", late.unwrap_err());
    assert!(
        msg.starts_with("server:") && msg.contains("certificate expired"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn clients_can_only_call_and_the_redis_proxy_serves_its_names() -> Result<()> {
    let names = [
        "catalog-cache.redis.svc.cluster.local",
        "session-store.redis.svc.cluster.local",
    ];
    let dev_pki = DevPki::generate(&Options {
        regions: vec!["dev".into()],
        clients: vec!["dev-client".into()],
        redis_proxy_names: names.iter().map(|n| n.to_string()).collect(),
        ..Options::default()
    })?;
    let root = certs(dev_pki.root.cert_pem())?.remove(0);
    let dev = dev_pki.region("dev").context("region")?;

    let client = dev.client("dev-client").context("client")?;
    let chain = certs(&client.chain_pem)?;
    webpki_verify(
        &chain,
        &root,
        webpki::KeyUsage::client_auth(),
        UnixTime::now(),
    )?;
    assert!(
        webpki_verify(
            &chain,
            &root,
            webpki::KeyUsage::server_auth(),
            UnixTime::now()
        )
        .is_err(),
        "a client certificate must not serve"
    );
    let s = sans(&client.cert_der())?;
    assert_eq!(s.uri, ["spiffe://cluster.local/ns/ecommerce/sa/dev-client"]);
    assert!(s.dns.is_empty() && s.ip.is_empty());

    let redis = dev.redis_proxy.as_ref().context("redis proxy")?;
    let chain = certs(&redis.chain_pem)?;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        webpki_verify(&chain, &root, usage, UnixTime::now())?;
    }
    let der = redis.cert_der();
    let s = sans(&der)?;
    assert_eq!(s.dns, names);
    assert_eq!(
        s.uri,
        ["spiffe://cluster.local/ns/redis/sa/redis-enterprise"]
    );
    for name in names {
        dns_valid(&der, name)?;
    }
    assert!(dns_valid(&der, "recommendation-cache.redis.svc.cluster.local").is_err());

    // Without names there is no Redis certificate; without clients, no client.
    let plain = pki();
    assert!(
        plain
            .regions
            .iter()
            .all(|r| r.redis_proxy.is_none() && r.clients.is_empty())
    );
    Ok(())
}

/// A CA's revocation list names the serials given, is signed by that CA (its issuer is the CA's
/// subject) and says when the next one is due; a CA loaded back from PEM keeps its serial.
#[test]
fn a_ca_signs_revocation_lists_of_the_serials_it_is_given() -> Result<()> {
    use x509_parser::revocation_list::CertificateRevocationList;
    let root = Ca::root("crl root", Validity::days(2))?;
    let intermediate = root.intermediate("crl intermediate", Validity::days(2))?;
    let leaf = intermediate.issue(&LeafSpec::workload(
        "payment",
        "ecommerce",
        "cluster.local",
        "cluster.local",
    ))?;
    let pem = intermediate.crl_pem(&[leaf.serial_hex()], 7)?;
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow!("{e:?}"))?;
    let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| anyhow!("{e}"))?;
    let revoked: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    assert_eq!(revoked, [leaf.serial_hex()]);
    let issuer_cert = certs(intermediate.cert_pem())?.remove(0);
    assert_eq!(crl.issuer(), parse(&issuer_cert).subject());
    assert!(crl.next_update().is_some());
    assert!(root.crl_pem(&["not hex".to_owned()], 1).is_err());

    let loaded = Ca::from_pem(
        intermediate.cert_pem(),
        &intermediate.key_pem(),
        Some(root.cert_pem()),
    )?;
    assert_eq!(loaded.serial_hex(), intermediate.serial_hex());
    assert_ne!(root.serial_hex(), intermediate.serial_hex());
    Ok(())
}
