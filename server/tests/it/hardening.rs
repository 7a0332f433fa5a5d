//! What a hostile or broken client cannot do to a real server: exhaust it with a resize bomb,
//! hold connections with half-sent requests, pile up connections, post from another web origin,
//! reach it under a rebinding host name, or get a non-JSON error.

use crate::common::{fixture_weights, Server};
use reqwest::multipart::{Form, Part};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use zfvis_api::ApiError;

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 30, 30]));
    let mut buf = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
        .unwrap();
    buf
}

fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

async fn expect(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status().as_u16(), status);
    let err: ApiError = resp.json().await.expect("JSON error");
    assert_eq!(err.code.as_str(), code, "{}", err.error);
}

/// Reads until the server closes the connection (or `limit` passes): what it sent.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(String::from_utf8_lossy(&got).into_owned()),
        }
    }
    None
}

#[tokio::test]
async fn a_strip_image_is_refused_before_it_is_resized() {
    let server = Server::start(&fixture_weights(), &[]);
    let client = reqwest::Client::new();
    // small on the wire (a well-compressed one is 148 bytes); resized to 256 wide, 3 GiB
    let bomb = png(1, 16_384);
    assert!(bomb.len() < 100_000);
    let form = Form::new().part("image", Part::bytes(bomb).file_name("strip.png"));
    let resp = client
        .post(format!("{}/api/predict", server.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    expect(resp, 422, "image_too_elongated").await;
}

#[test]
fn half_sent_headers_do_not_hold_a_connection() {
    let server = Server::start(&fixture_weights(), &["--header-timeout-secs", "1"]);
    let mut stream = TcpStream::connect(addr(&server)).unwrap();
    stream
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    let closed = read_until_closed(&mut stream, Duration::from_secs(10));
    assert!(closed.is_some(), "the server kept a half-sent request open");
}

#[test]
fn a_stalled_upload_is_ended() {
    let server = Server::start(&fixture_weights(), &["--body-timeout-secs", "1"]);
    let mut stream = TcpStream::connect(addr(&server)).unwrap();
    stream
        .write_all(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n",
        )
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10))
        .expect("the server waited for the rest of the body for ever");
    if !answer.is_empty() {
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("\"code\":\"incomplete_body\""), "{answer}");
    }
}

#[test]
fn connections_over_the_cap_get_a_json_503() {
    let server = Server::start(&fixture_weights(), &["--max-connections", "3"]);
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr(&server)).unwrap())
        .collect();
    // let the server accept them
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(addr(&server)).unwrap();
    let answer = read_until_closed(&mut extra, Duration::from_secs(5)).expect("answered");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 5"),
        "{answer}"
    );
    assert!(answer.contains("\"code\":\"overloaded\""), "{answer}");
    drop(held);
    // the slots come back
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(addr(&server)).unwrap();
        s.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let answer = read_until_closed(&mut s, Duration::from_secs(5)).unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slots not released: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn other_origins_and_rebinding_hosts_are_refused() {
    let server = Server::start(
        &fixture_weights(),
        &["--allowed-origin", "https://class.example"],
    );
    let client = reqwest::Client::new();
    let form = || Form::new().part("image", Part::bytes(png(64, 64)).file_name("a.png"));
    let post = |origin: &'static str| {
        client
            .post(format!("{}/api/predict", server.url))
            .header("origin", origin)
            .multipart(form())
    };
    expect(
        post("http://evil.example").send().await.unwrap(),
        403,
        "forbidden_origin",
    )
    .await;
    let own = server.url.clone();
    let resp = client
        .post(format!("{}/api/predict", server.url))
        .header("origin", own)
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        post("https://class.example").send().await.unwrap().status(),
        200
    );
    // reading is allowed from anywhere
    let resp = client
        .get(format!("{}/api/model", server.url))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // a host name that resolves to us but is not ours (DNS rebinding)
    let resp = client
        .get(format!("{}/api/health", server.url))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    expect(resp, 403, "unknown_host").await;
    // media types are case-insensitive
    let boundary = "XyZ";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&png(64, 64));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let resp = client
        .post(format!("{}/api/predict", server.url))
        .header(
            "content-type",
            format!("Multipart/Form-Data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn odd_requests_still_get_json() {
    let server = Server::start(&fixture_weights(), &[]);
    let client = reqwest::Client::new();
    let long = "a".repeat(20_000);
    let resp = client
        .get(format!("{}/api/model?x={long}", server.url))
        .send()
        .await
        .unwrap();
    expect(resp, 414, "uri_too_long").await;
    let resp = client
        .delete(format!("{}/api/model", server.url))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("allow"));
    expect(resp, 405, "method_not_allowed").await;
    for path in [
        "/visualize/conv1/-1",
        "/visualize/conv1/73786976294838206464",
    ] {
        let resp = client
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        expect(resp, 404, "map_out_of_range").await;
    }
}
