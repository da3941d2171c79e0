//! Every call is authenticated; failures say nothing that helps an attacker.

use std::time::{SystemTime, UNIX_EPOCH};

use arrow_flight::sql::client::FlightSqlServiceClient;
use jsonwebtoken::{encode, EncodingKey, Header};
use tonic::Code;

use crate::common::*;
use meshql_flight::{serve, ServerConfig};

fn assert_unauthenticated(e: tonic::Status) {
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(e.message().contains("authentication failed"), "{e}");
    for leak in ["password", "expired", "forged", "unknown", "revoked", "disabled"] {
        assert!(
            !e.message().to_lowercase().contains(&format!("{leak} ")),
            "leaks why: {e}"
        );
    }
}

#[tokio::test]
async fn password_login_then_bearer_token() {
    let server = start(config("", "")).await;
    let mut client = login(&server, "alice").await;
    let token = client.token().cloned().expect("token from the handshake");
    assert!(token.starts_with("mqt_"), "{token}");
    let rows = sql(&mut client, "SELECT count(*) FROM mesh.customer.profiles")
        .await
        .unwrap();
    assert_eq!(rows, vec![vec!["200".to_string()]]);
    // The token alone (a fresh connection, no handshake) works too.
    let mut fresh = anonymous_client(&server).await;
    fresh.set_token(token);
    assert_eq!(sql(&mut fresh, "SELECT 1").await.unwrap(), vec![vec!["1".to_string()]]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_credentials_are_refused_alike() {
    let server = start(config("", "")).await;
    for (user, password) in [
        ("alice", "wrong"),
        ("nobody", PASSWORD),
        ("gone", PASSWORD),
        ("alice", ""),
    ] {
        let mut client = anonymous_client(&server).await;
        let e = client.handshake(user, password).await.unwrap_err();
        assert!(e.to_string().contains("authentication failed"), "{user}: {e}");
        assert!(!e.to_string().contains("wrong password"), "{e}");
    }
    // No credentials at all.
    let mut client = anonymous_client(&server).await;
    assert_unauthenticated(sql(&mut client, "SELECT 1").await.unwrap_err());
    // A forged token: a real one with a byte changed, and one from another server.
    let good = login(&server, "alice").await.token().cloned().unwrap();
    let mut forged = good.clone().into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let other = start(config("", "")).await;
    let foreign = login(&other, "alice").await.token().cloned().unwrap();
    for token in [
        String::from_utf8(forged).unwrap(),
        foreign,
        "mqt_".into(),
        "mqs_nope".into(),
        "garbage".into(),
    ] {
        let mut client = anonymous_client(&server).await;
        client.set_token(token.clone());
        assert_unauthenticated(sql(&mut client, "SELECT 1").await.unwrap_err());
    }
    other.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tokens_expire() {
    let server = start(config("  tokenTtl: 1\n", "")).await;
    let mut client = login(&server, "alice").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_unauthenticated(sql(&mut client, "SELECT 1").await.unwrap_err());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn service_tokens_and_revocation() {
    let (token, hash) = meshql_flight::auth::new_service_token();
    let (revoked, revoked_hash) = meshql_flight::auth::new_service_token();
    let extra = format!(
        "  serviceTokens:\n    - {{name: dashboards, tokenHash: '{hash}', groups: [analysts]}}\n    - {{name: retired, tokenHash: '{revoked_hash}', groups: [analysts], revoked: true}}\n"
    );
    let server = start(config(&extra, "")).await;
    let mut client = anonymous_client(&server).await;
    client.set_token(token);
    let rows = sql(&mut client, "SELECT count(*) FROM mesh.order.transactions")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let mut client = anonymous_client(&server).await;
    client.set_token(revoked);
    assert_unauthenticated(sql(&mut client, "SELECT 1").await.unwrap_err());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn anonymous_only_when_enabled() {
    let server = start(config("  anonymous: {enabled: true, groups: [contractors]}\n", "")).await;
    let mut client = anonymous_client(&server).await;
    // In as a contractor: orders yes, customer data no.
    assert!(sql(&mut client, "SELECT count(*) FROM mesh.order.transactions")
        .await
        .is_ok());
    let e = sql(&mut client, "SELECT * FROM mesh.customer.profiles")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    server.shutdown().await.unwrap();
}

#[derive(Clone, serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    exp: u64,
    groups: Vec<&'a str>,
    region: &'a str,
}

fn jwt(claims: &Claims, kid: &str) -> String {
    let pem = std::fs::read(repo().join("testdata/server/jwt-signing.pem")).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    encode(&header, claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

#[tokio::test]
async fn jwt_single_sign_on() {
    let jwks = repo().join("testdata/server/jwks.json");
    let extra = format!(
        "  jwt: {{issuer: 'https://idp.example', audience: meshql, jwksFile: '{}', attributeClaims: {{region: region}}}}\n",
        jwks.display()
    );
    let server = start(config(&extra, "")).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let good = Claims {
        sub: "sam@example",
        iss: "https://idp.example",
        aud: "meshql",
        exp: now + 300,
        groups: vec!["support"],
        region: "EU",
    };
    let run = |token: String| {
        let server_addr = server.addr();
        async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{server_addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = FlightSqlServiceClient::new(channel);
            client.set_token(token);
            sql(
                &mut client,
                "SELECT DISTINCT region FROM mesh.customer.profiles WHERE segment <> 'business'",
            )
            .await
        }
    };
    // Claims become the principal: support in EU sees EU consumers only.
    assert_eq!(
        run(jwt(&good, "test-key-1")).await.unwrap(),
        vec![vec!["EU".to_string()]]
    );
    let expired = Claims {
        exp: now - 3600,
        ..good.clone()
    };
    assert_unauthenticated(run(jwt(&expired, "test-key-1")).await.unwrap_err());
    let wrong_aud = Claims {
        aud: "someone-else",
        ..good.clone()
    };
    assert_unauthenticated(run(jwt(&wrong_aud, "test-key-1")).await.unwrap_err());
    let wrong_iss = Claims {
        iss: "https://evil.example",
        ..good.clone()
    };
    assert_unauthenticated(run(jwt(&wrong_iss, "test-key-1")).await.unwrap_err());
    assert_unauthenticated(run(jwt(&good, "unknown-kid")).await.unwrap_err());
    // Unsigned ("alg": "none") and tampered payloads.
    let token = jwt(&good, "test-key-1");
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"test-key-1"}"#);
    assert_unauthenticated(run(format!("{none_header}.{}.", parts[1])).await.unwrap_err());
    let admin = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        r#"{{"sub":"x","iss":"https://idp.example","aud":"meshql","exp":{},"groups":["platform-admins","analysts"]}}"#,
        now + 300
    ));
    assert_unauthenticated(run(format!("{}.{admin}.{}", parts[0], parts[2])).await.unwrap_err());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tls_and_mutual_tls() {
    let tls = repo().join("testdata/server/tls");
    let extra = format!(
        "tls: {{cert: '{0}/server.pem', key: '{0}/server.key', clientCa: '{0}/ca.pem'}}\n",
        tls.display()
    );
    let server = start(config("", &extra)).await;
    let ca = tonic::transport::Certificate::from_pem(std::fs::read(tls.join("ca.pem")).unwrap());
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(tls.join("client.pem")).unwrap(),
        std::fs::read(tls.join("client.key")).unwrap(),
    );
    let endpoint = |with_identity: bool| {
        let mut cfg = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .domain_name("localhost");
        if with_identity {
            cfg = cfg.identity(identity.clone());
        }
        tonic::transport::Channel::from_shared(format!("https://localhost:{}", server.addr().port()))
            .unwrap()
            .tls_config(cfg)
            .unwrap()
    };
    let channel = endpoint(true).connect().await.expect("mutual TLS connects");
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake("alice", PASSWORD).await.unwrap();
    assert_eq!(
        sql(&mut client, "SELECT 42").await.unwrap(),
        vec![vec!["42".to_string()]]
    );
    // Without a client certificate the TLS handshake (or the first call) fails.
    let refused = match endpoint(false).connect().await {
        Err(_) => true,
        Ok(channel) => FlightSqlServiceClient::new(channel)
            .handshake("alice", PASSWORD)
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate got in");
    // Plain text to a TLS port fails.
    let plain = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", server.addr().port()))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(FlightSqlServiceClient::new(channel)
            .handshake("alice", PASSWORD)
            .await
            .is_err());
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_published_demo_key_is_refused_beyond_loopback() {
    let demo = repo().join("testdata/server/signing.key");
    let yaml = |listen: &str, allow: bool| {
        format!(
            "listen: {listen}\nauth:\n  signingKey: {{file: '{}'}}\n  allowDemoKey: {allow}\n",
            demo.display()
        )
    };
    let cfg = |y: String| -> ServerConfig { serde_yaml::from_str(&y).expect("config") };
    let e = match serve(sample_mesh(), cfg(yaml("0.0.0.0:0", false))).await {
        Ok(_) => panic!("a published key was served on every interface"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("demo key") && e.contains("--allow-demo-key"), "{e}");
    // On loopback (a demo on one's own machine) or when asked for explicitly, it serves.
    for (listen, allow) in [("127.0.0.1:0", false), ("0.0.0.0:0", true)] {
        let server = serve(sample_mesh(), cfg(yaml(listen, allow))).await.expect(listen);
        server.shutdown().await.expect("shutdown");
    }
    // Any other key serves anywhere.
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("k");
    std::fs::write(&key, "an-operator-made-key-of-at-least-32-bytes-long").expect("key");
    let own = format!(
        "listen: 0.0.0.0:0\nauth:\n  signingKey: {{file: '{}'}}\n",
        key.display()
    );
    let server = serve(sample_mesh(), cfg(own)).await.expect("own key");
    server.shutdown().await.expect("shutdown");
}
