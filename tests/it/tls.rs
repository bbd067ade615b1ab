//! Outbound TLS: certificates are always verified, and a connection's
//! `ca_file` is the one way to trust a private CA. The simulator is put
//! behind a TLS front whose certificate is issued by a CA made for the test.

use std::net::SocketAddr;
use std::sync::Arc;

use glwarden::health::State;
use glwarden_testkit::*;

/// A CA and a `localhost` certificate it issued: (CA PEM, server config).
fn private_pki() -> (String, rustls::ServerConfig) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "glwarden test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    (ca.pem(), server)
}

/// Terminates TLS on a loopback port and relays to `upstream` in plain HTTP.
async fn tls_front(upstream: SocketAddr, config: rustls::ServerConfig) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses our certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// A config for `p` at `https://localhost:<front>`, with `extra` lines
/// (as written, unknown keys too) in the connection's table.
fn config_behind_tls(
    fx: &Fixture,
    p: &Connected,
    front: SocketAddr,
    extra: &str,
) -> std::path::PathBuf {
    let url = format!("https://localhost:{}", front.port());
    config_at(fx, p, &url, extra)
}

/// A config for `p` at `url`, with `extra` lines in the connection's table.
fn config_at(fx: &Fixture, p: &Connected, url: &str, extra: &str) -> std::path::PathBuf {
    let config = fx
        .config(&[p])
        .edit(|c| c.connections.get_mut("main").unwrap().url = url.into())
        .write();
    let text = std::fs::read_to_string(&config).unwrap();
    let header = "[connections.main]\n";
    assert!(text.contains(header), "{text}");
    std::fs::write(&config, text.replace(header, &format!("{header}{extra}"))).unwrap();
    config
}

#[tokio::test]
async fn a_private_ca_is_refused_unless_its_bundle_is_configured() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let (ca_pem, server) = private_pki();
    let front = tls_front(fx.sim.addr(), server).await;

    // Built-in roots only: the certificate is refused, nothing is decided.
    let config = config_behind_tls(&fx, &p, front, "");
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    let report = glwarden::report::build(&store, &glwarden::sweep::Selection::All)
        .await
        .unwrap();
    let connection = &report.connections[0].health;
    assert_eq!(connection.state, State::Unknown, "{}", connection.detail);
    assert!(
        connection.detail.to_lowercase().contains("certificate"),
        "the detail says why: {}",
        connection.detail
    );
    assert_eq!(states(&store, p.id).await, [State::Unknown; 3]);
    drop(checker);

    // The CA's bundle for this connection: checked over TLS, healthy.
    let ca_file = fx.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let config = config_behind_tls(
        &fx,
        &p,
        front,
        &format!("ca_file = {:?}\n", ca_file.display().to_string()),
    );
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    assert_eq!(connection_state(&store).await, State::Connected);
    assert_eq!(states(&store, p.id).await, HEALTHY);
}

#[tokio::test]
async fn a_bad_ca_file_or_a_switch_to_skip_verification_is_a_config_error() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let front: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let not_pem = fx.dir.path().join("not.pem");
    std::fs::write(&not_pem, "just text\n").unwrap();
    let cases = [
        (
            format!("ca_file = {:?}\n", not_pem.display().to_string()),
            "connections.main.ca_file",
            "holds no PEM certificate",
        ),
        (
            "ca_file = \"/nonexistent/ca.pem\"\n".to_owned(),
            "connections.main.ca_file",
            "cannot read /nonexistent/ca.pem",
        ),
        (
            "tls_verify = false\n".to_owned(),
            "tls_verify",
            "unknown field",
        ),
        (
            "danger_accept_invalid_certs = true\n".to_owned(),
            "danger_accept_invalid_certs",
            "unknown field",
        ),
    ];
    // Plain HTTP to anything but loopback would send the token in clear.
    let plain = "# plain\n";
    let cases = cases.into_iter().chain([(
        plain.to_owned(),
        "connections.main.url",
        "would send the token unencrypted",
    )]);
    for (lines, key, why) in cases {
        let config = if lines == plain {
            config_at(&fx, &p, "http://gitlab.example.com", &lines)
        } else {
            config_behind_tls(&fx, &p, front, &lines)
        };
        let err = match glwarden::config::Config::load(&config) {
            Ok(_) => panic!("{lines} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&config.display().to_string()), "{err}");
        assert!(err.contains(key), "names {key}: {err}");
        assert!(err.contains(why), "says {why}: {err}");
    }
}
