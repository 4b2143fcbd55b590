//! `--client-ca-file`: the webhook listener requires a client certificate
//! issued by that CA. A client with one is judged; one without a
//! certificate, or with one from another CA, is refused at the TLS
//! handshake and never reaches the router; the admin port (probes,
//! metrics) stays plain HTTP without client certificates.

mod support;

use std::time::Duration;

use residency_guard::engine::Lang;
use residency_guard::tls::ClientCa;
use residency_guard::webhook::listener::Limits;
use serde_json::Value;
use support::{TestCa, TestServer, TlsClient, fixture_object, review, snapshot_from};

const MIB: usize = 1024 * 1024;

/// A server that accepts client certificates from `client_ca` only.
async fn server_requiring(client_ca: &TestCa) -> TestServer {
    let (snapshot, workloads) = snapshot_from(&["tests/fixtures/kinds.yaml"]);
    let limits = Limits {
        drain: Duration::from_secs(2),
        client_ca: Some(
            ClientCa::from_pem("client-ca.crt", client_ca.cert_pem.as_bytes())
                .expect("a CA certificate"),
        ),
        ..Limits::default()
    };
    TestServer::start_limited(snapshot, workloads, Lang::En, 8 * MIB, limits).await
}

/// Connect and POST a denial-shaped review: the status and body, or why
/// it failed (a refused handshake may surface at connect or, with TLS 1.3,
/// at the first read).
async fn attempt(client: &TlsClient) -> Result<(u16, Vec<u8>), String> {
    let bad = fixture_object("tests/fixtures/kinds.yaml", "deployment-bad");
    let mut conn = client.connect().await?;
    tokio::time::timeout(
        Duration::from_secs(5),
        conn.post(
            "/validate/workloads",
            review("client-auth", "CREATE", Some(&bad), None, false),
        ),
    )
    .await
    .map_err(|_| "no answer within 5 s".to_string())?
}

/// `GET path` on the plain-HTTP admin port.
async fn admin_get(server: &TestServer, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(server.admin_addr)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "x")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn refused_for_client_certificate(metrics: &str) -> u64 {
    let key = "residency_guard_webhook_refused_total{reason=\"client_certificate\"} ";
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn decisions(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("residency_guard_admission_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn only_clients_with_a_certificate_from_the_client_ca_are_judged() {
    let api_server_ca = TestCa::new();
    let server = server_requiring(&api_server_ca).await;

    // The API server, with a certificate from the configured CA: judged.
    let (cert, key) = api_server_ca.client_pair("kube-apiserver-webhook-client");
    let (status, body) = attempt(&server.client_with_cert(&cert, &key))
        .await
        .expect("a client with a certificate from the client CA is served");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["allowed"], false, "{v}");
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("requires mainland-China nodes"),
        "{v}"
    );

    // A pod with a plain TLS client: refused at the handshake.
    let plain = attempt(&server.client()).await;
    assert!(plain.is_err(), "a client without a certificate: {plain:?}");

    // A certificate from another CA (say, one a pod minted itself).
    let other_ca = TestCa::new();
    let (cert, key) = other_ca.client_pair("kube-apiserver-webhook-client");
    let forged = attempt(&server.client_with_cert(&cert, &key)).await;
    assert!(forged.is_err(), "a certificate from another CA: {forged:?}");

    // A certificate the serving CA issued is not the client CA's either.
    let (cert, key) = server.ca.client_pair("kube-apiserver-webhook-client");
    let serving = attempt(&server.client_with_cert(&cert, &key)).await;
    assert!(
        serving.is_err(),
        "a certificate from the serving CA: {serving:?}"
    );

    // Probes and metrics stay on the plain-HTTP admin port.
    assert_eq!(admin_get(&server, "/livez").await.0, 200);
    assert_eq!(admin_get(&server, "/readyz").await.0, 200);
    let (status, metrics) = admin_get(&server, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        decisions(&metrics),
        1,
        "only the authenticated review reached the router: {metrics}"
    );
    assert_eq!(
        refused_for_client_certificate(&metrics),
        3,
        "each refused handshake is counted: {metrics}"
    );
    server.stop();
}

#[tokio::test]
async fn without_a_client_ca_plain_clients_are_judged() {
    let (snapshot, workloads) = snapshot_from(&["tests/fixtures/kinds.yaml"]);
    let server = TestServer::start(snapshot, workloads, Lang::En, 8 * MIB).await;
    let (status, _) = attempt(&server.client())
        .await
        .expect("no client CA: no client certificate needed");
    assert_eq!(status, 200);
    server.stop();
}

#[test]
fn a_client_ca_file_without_a_certificate_is_an_error_naming_the_file() {
    let e = ClientCa::from_pem("/etc/residency-guard/client-ca/ca.crt", b"not a PEM")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/etc/residency-guard/client-ca/ca.crt"), "{e}");
    assert!(e.contains("no usable CA certificate"), "{e}");
    let missing =
        ClientCa::from_file(std::path::Path::new("/nonexistent/client-ca.crt")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/client-ca.crt"),
        "{missing}"
    );
}
