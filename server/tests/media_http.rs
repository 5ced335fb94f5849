//! The media endpoints over HTTP: the real router, services, RocksDB and media files in a temp
//! dir, driven in process and, where the connection itself matters, over loopback TCP.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use caduceus_config::Config;
use caduceus_server::service::Services;
use caduceus_server::storage::tables::MEDIA;
use caduceus_server::storage::Db;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use image::{DynamicImage, ImageFormat};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

struct TestServer {
    dir: tempfile::TempDir,
    db: Arc<Db>,
    router: Router,
    alice: String,
    bob: String,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!("not JSON ({error}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    fn errcode(&self) -> String {
        self.json()["errcode"].as_str().unwrap_or_default().to_owned()
    }

    fn header(&self, name: impl header::AsHeaderName) -> &str {
        self.headers.get(name).map(|value| value.to_str().unwrap()).unwrap_or_default()
    }
}

impl TestServer {
    async fn start(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_owned();
        adjust(&mut config);
        let db = Arc::new(Db::open(&dir.path().join("db")).unwrap());
        let services = Services::new(config, db.clone()).unwrap();

        let mut tokens = Vec::new();
        for localpart in ["alice", "bob"] {
            let user_id = services.accounts.create_user(localpart, None, false).await.unwrap();
            tokens
                .push(services.accounts.create_session(&user_id, None, None).unwrap().access_token);
        }
        let bob = tokens.pop().unwrap();
        let alice = tokens.pop().unwrap();
        Self { router: caduceus_server::api::router(services), dir, db, alice, bob }
    }

    fn media_dir(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    /// Counts the files under media/blobs and media/tmp, and the media records.
    fn stored(&self) -> (usize, usize, usize) {
        let blobs = files_under(&self.media_dir().join("blobs")).len();
        let temp = files_under(&self.media_dir().join("tmp")).len();
        (blobs, temp, self.db.scan_all(&MEDIA).unwrap().len())
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, body }
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> Reply {
        let mut request = Request::builder().uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn upload(&self, bytes: &[u8], content_type: &str, file_name: Option<&str>) -> Reply {
        let uri = match file_name {
            Some(name) => format!("/_matrix/media/v3/upload?filename={name}"),
            None => "/_matrix/media/v3/upload".to_owned(),
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.alice))
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, bytes.len())
            .body(Body::from(bytes.to_vec()))
            .unwrap();
        self.send(request).await
    }

    /// Uploads and returns the media ID.
    async fn upload_ok(&self, bytes: &[u8], content_type: &str, file_name: Option<&str>) -> String {
        let reply = self.upload(bytes, content_type, file_name).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
        let uri = reply.json()["content_uri"].as_str().unwrap().to_owned();
        uri.strip_prefix("mxc://localhost/").expect("a local mxc:// URI").to_owned()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 200])
    });
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    bytes
}

#[tokio::test]
async fn upload_then_download_and_thumbnail() {
    let server = TestServer::start(|_| {}).await;
    let photo = png(1200, 900);
    let id = server.upload_ok(&photo, "image/png", Some("wound.png")).await;

    let download = format!("/_matrix/client/v1/media/download/localhost/{id}");
    let reply = server.get(&download, Some(&server.alice)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, photo);
    assert_eq!(reply.header(header::CONTENT_TYPE), "image/png");
    assert_eq!(reply.header(header::CONTENT_LENGTH), photo.len().to_string());
    assert_eq!(reply.header(header::CONTENT_DISPOSITION), "inline; filename=wound.png");
    assert_eq!(reply.header("content-security-policy"), CSP);
    assert_eq!(reply.header("x-content-type-options"), "nosniff");
    assert_eq!(reply.header("cross-origin-resource-policy"), "cross-origin");

    let reply = server.get(&format!("{download}/renamed.png"), Some(&server.bob)).await;
    assert_eq!(reply.status, StatusCode::OK, "any signed-in user can download");
    assert_eq!(reply.header(header::CONTENT_DISPOSITION), "inline; filename=renamed.png");

    let thumbnail =
        format!("/_matrix/client/v1/media/thumbnail/localhost/{id}?width=96&height=96&method=crop");
    let reply = server.get(&thumbnail, Some(&server.alice)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CONTENT_TYPE), "image/png");
    assert_eq!(reply.header(header::CONTENT_DISPOSITION), "inline; filename=thumbnail.png");
    assert_eq!(reply.header("content-security-policy"), CSP);
    let image = image::load_from_memory(&reply.body).unwrap();
    assert_eq!((image.width(), image.height()), (96, 96));

    let scaled = format!("/_matrix/client/v1/media/thumbnail/localhost/{id}?width=300&height=200");
    let reply = server.get(&scaled, Some(&server.alice)).await;
    let image = image::load_from_memory(&reply.body).unwrap();
    assert_eq!((image.width(), image.height()), (320, 240), "scale is the default method");
}

#[tokio::test]
async fn download_requires_access_token() {
    let server = TestServer::start(|_| {}).await;
    let id = server.upload_ok(b"notes", "text/plain", None).await;
    let reply =
        server.get(&format!("/_matrix/client/v1/media/download/localhost/{id}"), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.errcode(), "M_MISSING_TOKEN");
}

#[tokio::test]
async fn unauthenticated_endpoints_are_frozen() {
    let server = TestServer::start(|_| {}).await;
    let id = server.upload_ok(&png(50, 50), "image/png", None).await;
    let frozen = [
        format!("/_matrix/media/v3/download/localhost/{id}"),
        format!("/_matrix/media/v3/download/localhost/{id}/photo.png"),
        format!("/_matrix/media/v3/thumbnail/localhost/{id}?width=32&height=32"),
        "/_matrix/media/v3/download/localhost/doesNotExist".to_owned(),
    ];
    for uri in frozen {
        let reply = server.get(&uri, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.errcode(), "M_NOT_FOUND", "{uri}");
    }

    // Upload and config under /_matrix/media/v3 keep working.
    let reply = server.get("/_matrix/media/v3/config", Some(&server.alice)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["m.upload.size"], 100 * 1024 * 1024);
}

#[tokio::test]
async fn config_reports_upload_limit() {
    let server = TestServer::start(|config| config.media.max_upload_bytes = 5000).await;
    let reply = server.get("/_matrix/client/v1/media/config", Some(&server.alice)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["m.upload.size"], 5000);
}

#[tokio::test]
async fn url_preview_is_disabled() {
    let server = TestServer::start(|_| {}).await;
    for path in ["/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url"] {
        let uri = format!("{path}?url=https%3A%2F%2Fexample.org%2F");
        let reply = server.get(&uri, Some(&server.alice)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(reply.errcode(), "M_FORBIDDEN");
        assert_eq!(reply.json()["error"], "URL previews are disabled on this server");
    }
}

#[tokio::test]
async fn oversized_upload_is_rejected() {
    let server = TestServer::start(|config| config.media.max_upload_bytes = 4096).await;

    let reply = server.upload(&[1u8; 5000], "application/octet-stream", None).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.errcode(), "M_TOO_LARGE");

    // Without Content-Length the limit applies while the body streams in.
    let chunks = (0..5).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![2u8; 1000])));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/_matrix/media/v3/upload")
        .header(header::AUTHORIZATION, format!("Bearer {}", server.alice))
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let reply = server.send(request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.errcode(), "M_TOO_LARGE");

    assert_eq!(server.stored(), (0, 0, 0), "no blob, temp file or record is left");

    // The JSON body limit (1 MiB by default) does not apply to uploads.
    let server = TestServer::start(|_| {}).await;
    let large = vec![3u8; 3 * 1024 * 1024];
    server.upload_ok(&large, "application/octet-stream", None).await;
}

#[tokio::test]
async fn truncated_upload_is_rejected() {
    let server = TestServer::start(|_| {}).await;

    let request = Request::builder()
        .method(Method::POST)
        .uri("/_matrix/media/v3/upload")
        .header(header::AUTHORIZATION, format!("Bearer {}", server.alice))
        .header(header::CONTENT_LENGTH, 5000)
        .body(Body::from(vec![1u8; 100]))
        .unwrap();
    let reply = server.send(request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.errcode(), "M_UNKNOWN");

    let chunks = vec![
        Ok(Bytes::from(vec![1u8; 1000])),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset")),
    ];
    let request = Request::builder()
        .method(Method::POST)
        .uri("/_matrix/media/v3/upload")
        .header(header::AUTHORIZATION, format!("Bearer {}", server.alice))
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let reply = server.send(request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.errcode(), "M_UNKNOWN");

    assert_eq!(server.stored(), (0, 0, 0), "no blob, temp file or record is left");
}

#[tokio::test]
async fn connection_closed_mid_upload_leaves_nothing() {
    let server = TestServer::start(|_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = server.router.clone();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n",
        server.alice
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[9u8; 20_000]).await.unwrap();
    stream.flush().await.unwrap();

    // Wait until the server has started writing the upload, then hang up.
    let started = tokio::time::Instant::now();
    while server.stored().1 == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "the upload never reached media/tmp");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    drop(stream);

    let started = tokio::time::Instant::now();
    while server.stored() != (0, 0, 0) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "left behind (blobs, temp files, records): {:?}",
            server.stored()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    serving.abort();
}

#[tokio::test]
async fn reserved_upload_flow() {
    let server = TestServer::start(|_| {}).await;
    let reply = server
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/_matrix/media/v1/create")
                .header(header::AUTHORIZATION, format!("Bearer {}", server.alice))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let created = reply.json();
    let uri = created["content_uri"].as_str().unwrap();
    let id = uri.strip_prefix("mxc://localhost/").unwrap().to_owned();
    let expires = created["unused_expires_at"].as_u64().expect("unused_expires_at is set");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!(expires > now.as_millis() as u64);

    let download = format!("/_matrix/client/v1/media/download/localhost/{id}?timeout_ms=100");
    let reply = server.get(&download, Some(&server.alice)).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.errcode(), "M_NOT_YET_UPLOADED");

    let put = |token: &str, body: &'static [u8]| {
        Request::builder()
            .method(Method::PUT)
            .uri(format!("/_matrix/media/v3/upload/localhost/{id}?filename=scan.txt"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(body))
            .unwrap()
    };
    let reply = server.send(put(&server.bob, b"not bob's")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.errcode(), "M_FORBIDDEN");

    let reply = server.send(put(&server.alice, b"the scan")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), serde_json::json!({}));

    let reply = server.send(put(&server.alice, b"again")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.errcode(), "M_CANNOT_OVERWRITE_MEDIA");

    let reply = server.get(&download, Some(&server.bob)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, b"the scan".as_slice());
    assert_eq!(reply.header(header::CONTENT_DISPOSITION), "inline; filename=scan.txt");
}

#[tokio::test]
async fn upload_rate_limit_sets_retry_after() {
    let server = TestServer::start(|config| config.media.uploads_per_minute = 1).await;
    server.upload_ok(b"first", "text/plain", None).await;
    let reply = server.upload(b"second", "text/plain", None).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.errcode(), "M_LIMIT_EXCEEDED");
    let retry_after_ms = reply.json()["retry_after_ms"].as_u64().expect("retry_after_ms is set");
    assert!(retry_after_ms > 0, "{retry_after_ms}");
    assert!(retry_after_ms <= 60_000, "{retry_after_ms}");
    let retry_after: u64 = reply.header(header::RETRY_AFTER).parse().expect("Retry-After is set");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn html_is_served_as_attachment() {
    let server = TestServer::start(|_| {}).await;
    let id = server.upload_ok(b"<script>alert(1)</script>", "text/html", Some("page.html")).await;
    let reply = server
        .get(&format!("/_matrix/client/v1/media/download/localhost/{id}"), Some(&server.alice))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CONTENT_TYPE), "text/html");
    assert_eq!(reply.header(header::CONTENT_DISPOSITION), "attachment; filename=page.html");
    assert_eq!(reply.header("content-security-policy"), CSP);
}

#[tokio::test]
async fn bad_thumbnail_requests_get_matrix_errors() {
    let server = TestServer::start(|_| {}).await;
    let id = server.upload_ok(b"%PDF-1.7", "application/pdf", None).await;
    let base = format!("/_matrix/client/v1/media/thumbnail/localhost/{id}");
    let cases = [
        (format!("{base}?width=32&height=32"), StatusCode::BAD_REQUEST, "M_UNKNOWN"),
        (format!("{base}?width=32"), StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        (format!("{base}?width=-3&height=32"), StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        (
            format!("{base}?width=32&height=32&method=stretch"),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "/_matrix/client/v1/media/thumbnail/localhost/unknownId?width=32&height=32".to_owned(),
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
    ];
    for (uri, status, errcode) in cases {
        let reply = server.get(&uri, Some(&server.alice)).await;
        assert_eq!(reply.status, status, "{uri}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.errcode(), errcode, "{uri}");
    }
}
