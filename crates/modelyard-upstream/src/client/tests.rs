//! Unit tests of the provider client.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A one-shot HTTP server answering `status` with `body` in one write.
async fn one_answer(status: &'static str, body: Vec<u8>) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        let _ = socket.write_all(&out).await;
        let mut rest = [0u8; 16];
        let _ = socket.read(&mut rest).await;
    });
    Url::parse(&format!("http://{addr}")).unwrap()
}

fn client(base_url: Url) -> ProviderClient {
    ProviderClient::new(ProviderEndpoint {
        name: "p".into(),
        kind: ProviderKind::OpenAi,
        base_url,
        api_key: None,
        headers: Vec::new(),
        proxy_url: None,
        timeouts: Timeouts::default(),
    })
    .unwrap()
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused_even_in_one_chunk() {
    let url = one_answer("401 Unauthorized", vec![b'x'; 5_000]).await;
    let response = client(url)
        .chat_completions(Bytes::from_static(b"{}"), false)
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let err = response.bytes(1_000).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("response body larger than 1000 bytes"),
        "{err}"
    );
    let url = one_answer("200 OK", vec![b'x'; 1_000]).await;
    let response = client(url)
        .chat_completions(Bytes::from_static(b"{}"), false)
        .await
        .unwrap();
    assert_eq!(response.bytes(1_000).await.unwrap().len(), 1_000);
}
