//! The media repository: uploads, authenticated downloads and thumbnails with matrix-sdk and
//! raw HTTP, limits and bad input, and crash safety of uploads under SIGKILL.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caduceus_tests::{Account, TestServer, PASSWORD};
use image::{DynamicImage, ImageFormat};
use matrix_sdk::media::{MediaFormat, MediaRequestParameters, MediaThumbnailSettings};
use matrix_sdk::ruma::api::MatrixVersion;
use matrix_sdk::ruma::events::room::MediaSource;
use matrix_sdk::ruma::media::Method;
use matrix_sdk::ruma::{uint, OwnedMxcUri};
use reqwest::header::{self, HeaderMap};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const UPLOAD: &str = "/_matrix/media/v3/upload";
const THUMBNAIL: &str = "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}";

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// A response to a media request, whose body may be a file rather than JSON.
struct MediaReply {
    status: u16,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl MediaReply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default()
    }

    fn assert_error(&self, status: u16, errcode: &str) -> &Self {
        let body = self.json();
        assert_eq!(self.status, status, "body: {}", String::from_utf8_lossy(&self.bytes));
        assert_eq!(body["errcode"], errcode, "body: {body}");
        assert!(body["error"].is_string(), "an error message is missing: {body}");
        self
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("failed to build an HTTP client")
}

async fn upload(
    server: &TestServer,
    account: &Account,
    bytes: Vec<u8>,
    content_type: &str,
) -> MediaReply {
    let response = http()
        .post(format!("{}{UPLOAD}", server.base_url()))
        .bearer_auth(&account.access_token)
        .header(header::CONTENT_TYPE, content_type)
        .body(bytes)
        .send()
        .await
        .expect("the upload request failed");
    reply(response).await
}

async fn get(server: &TestServer, account: Option<&Account>, path: &str) -> MediaReply {
    let mut request = http().get(format!("{}{path}", server.base_url()));
    if let Some(account) = account {
        request = request.bearer_auth(&account.access_token);
    }
    reply(request.send().await.expect("the GET request failed")).await
}

async fn reply(response: reqwest::Response) -> MediaReply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("reading the response body failed").to_vec();
    MediaReply { status, headers, bytes }
}

/// Returns the media ID of a successful upload's `mxc://localhost/...` URI.
fn media_id(reply: &MediaReply) -> String {
    let body = reply.json();
    assert_eq!(reply.status, 200, "upload failed: {body}");
    caduceus_tests::assert_matches_spec("POST", UPLOAD, 200, &body);
    let uri = body["content_uri"].as_str().expect("content_uri is a string");
    uri.strip_prefix("mxc://localhost/").expect("a local mxc:// URI").to_owned()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries {
        let path = entry.expect("failed to read a directory entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn blobs(server: &TestServer) -> Vec<PathBuf> {
    files_under(&server.data_dir().join("media").join("blobs"))
}

fn temp_files(server: &TestServer) -> Vec<PathBuf> {
    files_under(&server.data_dir().join("media").join("tmp"))
}

/// Encodes a `width` x `height` photo-like PNG with a colour gradient.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 160])
    });
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .expect("encoding a PNG failed");
    bytes
}

/// Builds a PNG of a few dozen bytes whose IHDR chunk claims `width` x `height` pixels, with a
/// stub for the image data: an image bomb for any decoder that trusts the header.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut checked = kind.to_vec();
        checked.extend_from_slice(data);
        out.extend_from_slice(&crc32(&checked).to_be_bytes());
        out
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace

    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(chunk(b"IHDR", &ihdr));
    bytes.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    bytes.extend(chunk(b"IEND", &[]));
    bytes
}

/// Computes CRC-32 as PNG chunks use it (ISO 3309, reflected polynomial 0xEDB88320).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Starts an upload over a raw connection that announces `announced` bytes, sends `sent` of
/// them and then keeps the connection open, and waits until the server has a temp file for it.
async fn start_slow_upload(
    server: &TestServer,
    account: &Account,
    announced: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .expect("failed to connect to the server");
    let head = format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: image/jpeg\r\nContent-Length: {announced}\r\n\r\n",
        account.access_token
    );
    stream.write_all(head.as_bytes()).await.expect("sending the request head failed");
    stream.write_all(&vec![0xAB; sent]).await.expect("sending the body failed");
    stream.flush().await.expect("flushing the upload failed");

    let deadline = Instant::now() + Duration::from_secs(10);
    while temp_files(server).is_empty() {
        assert!(Instant::now() < deadline, "the server never started writing the upload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stream
}

#[tokio::test]
async fn photo_round_trip_with_sdk() {
    let server = TestServer::start().await;
    server.register("alice").await;
    // The server does not advertise v1.11 yet, so the client is configured with it. Otherwise
    // matrix-sdk would download through the frozen unauthenticated endpoints.
    let client = server.sdk_client_with_versions(&[MatrixVersion::V1_11]).await;
    client.matrix_auth().login_username("alice", PASSWORD).send().await.expect("password login");

    let photo = png(1200, 900);
    let uploaded = client
        .media()
        .upload(&mime::IMAGE_PNG, photo.clone(), None)
        .await
        .expect("uploading the photo");
    let uri: OwnedMxcUri = uploaded.content_uri;
    assert_eq!(uri.server_name().expect("a valid mxc:// URI"), "localhost");

    let file = MediaRequestParameters {
        source: MediaSource::Plain(uri.clone()),
        format: MediaFormat::File,
    };
    let downloaded = client.media().get_media_content(&file, false).await.expect("downloading");
    assert_eq!(downloaded, photo, "the download returns the uploaded bytes");

    let scaled = MediaRequestParameters {
        source: MediaSource::Plain(uri.clone()),
        format: MediaFormat::Thumbnail(MediaThumbnailSettings::new(uint!(300), uint!(200))),
    };
    let thumbnail =
        client.media().get_media_content(&scaled, false).await.expect("downloading a thumbnail");
    let image = image::load_from_memory(&thumbnail).expect("the thumbnail is an image");
    assert_eq!((image.width(), image.height()), (320, 240), "the 320x240 scale size");

    let mut settings = MediaThumbnailSettings::new(uint!(32), uint!(32));
    settings.method = Method::Crop;
    let cropped = MediaRequestParameters {
        source: MediaSource::Plain(uri),
        format: MediaFormat::Thumbnail(settings),
    };
    let thumbnail =
        client.media().get_media_content(&cropped, false).await.expect("downloading a thumbnail");
    let image = image::load_from_memory(&thumbnail).expect("the thumbnail is an image");
    assert_eq!((image.width(), image.height()), (32, 32), "the 32x32 crop size");
}

#[tokio::test]
async fn encrypted_attachment_round_trip_with_sdk() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let client = server.sdk_client_with_versions(&[MatrixVersion::V1_11]).await;
    client.matrix_auth().login_username("alice", PASSWORD).send().await.expect("password login");

    let scan = b"%PDF-1.7 discharge letter for bed 4".repeat(500);
    let encrypted = client
        .upload_encrypted_file(&mut Cursor::new(scan.clone()))
        .await
        .expect("uploading the encrypted scan");
    let stored = blobs(&server);
    assert_eq!(stored.len(), 1);
    let on_disk = std::fs::read(&stored[0]).expect("reading the stored blob");
    assert_ne!(on_disk, scan, "the server stores the ciphertext");

    let request = MediaRequestParameters {
        source: MediaSource::Encrypted(Box::new(encrypted)),
        format: MediaFormat::File,
    };
    let decrypted = client.media().get_media_content(&request, false).await.expect("downloading");
    assert_eq!(decrypted, scan, "the client decrypts what it uploaded");
}

#[tokio::test]
async fn download_headers_and_frozen_endpoints() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let photo = png(200, 150);
    let id = media_id(&upload(&server, &alice, photo.clone(), "image/png").await);

    let download =
        get(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/localhost/{id}"))
            .await;
    assert_eq!(download.status, 200);
    assert_eq!(download.bytes, photo);
    assert_eq!(download.header(header::CONTENT_TYPE), "image/png");
    assert_eq!(download.header(header::CONTENT_DISPOSITION), "inline");
    assert_eq!(download.header(header::CONTENT_SECURITY_POLICY), CSP);
    assert_eq!(download.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(
        download.header(header::HeaderName::from_static("cross-origin-resource-policy")),
        "cross-origin"
    );

    let html = media_id(
        &upload(&server, &alice, b"<script>alert(1)</script>".to_vec(), "text/html").await,
    );
    let page =
        get(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/localhost/{html}"))
            .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header(header::CONTENT_DISPOSITION), "attachment", "HTML is never inline");

    let anonymous =
        get(&server, None, &format!("/_matrix/client/v1/media/download/localhost/{id}")).await;
    anonymous.assert_error(401, "M_MISSING_TOKEN");

    for path in [
        format!("/_matrix/media/v3/download/localhost/{id}"),
        format!("/_matrix/media/v3/thumbnail/localhost/{id}?width=32&height=32"),
    ] {
        get(&server, None, &path).await.assert_error(404, "M_NOT_FOUND");
        get(&server, Some(&alice), &path).await.assert_error(404, "M_NOT_FOUND");
    }

    for path in ["/_matrix/client/v1/media/config", "/_matrix/media/v3/config"] {
        let config = get(&server, Some(&alice), path).await;
        assert_eq!(config.status, 200);
        assert_eq!(config.json()["m.upload.size"], 100 * 1024 * 1024);
        caduceus_tests::assert_matches_spec("GET", path, 200, &config.json());
    }

    let preview = get(
        &server,
        Some(&alice),
        "/_matrix/client/v1/media/preview_url?url=https%3A%2F%2Fexample.org",
    )
    .await;
    preview.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn limits_and_bad_input_leave_nothing_behind() {
    let server =
        TestServer::start_with_env(&[("CADUCEUS__MEDIA__MAX_UPLOAD_BYTES", "65536")]).await;
    let alice = server.register("alice").await;

    let oversized = upload(&server, &alice, vec![1; 70_000], "application/octet-stream").await;
    oversized.assert_error(413, "M_TOO_LARGE");
    caduceus_tests::assert_matches_spec("POST", UPLOAD, 413, &oversized.json());

    let unknown =
        get(&server, Some(&alice), "/_matrix/client/v1/media/download/localhost/noSuchMedia").await;
    unknown.assert_error(404, "M_NOT_FOUND");
    let traversal =
        get(&server, Some(&alice), "/_matrix/client/v1/media/download/localhost/..%2F..%2Fdb")
            .await;
    traversal.assert_error(404, "M_NOT_FOUND");

    // A client that hangs up halfway through the body.
    let stream = start_slow_upload(&server, &alice, 60_000, 20_000).await;
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !temp_files(&server).is_empty() {
        assert!(Instant::now() < deadline, "the partial upload was not deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert!(blobs(&server).is_empty(), "no blob was stored: {:?}", blobs(&server));

    // An image whose header claims 30,000 x 30,000 pixels uploads as a file, but is not
    // decoded for a thumbnail.
    let bomb = png_header_only(30_000, 30_000);
    let id = media_id(&upload(&server, &alice, bomb.clone(), "image/png").await);
    let started = Instant::now();
    let path =
        format!("/_matrix/client/v1/media/thumbnail/localhost/{id}?width=96&height=96&method=crop");
    let rejected = get(&server, Some(&alice), &path).await;
    rejected.assert_error(413, "M_TOO_LARGE");
    caduceus_tests::assert_matches_spec("GET", THUMBNAIL, 413, &rejected.json());
    assert!(started.elapsed() < Duration::from_secs(5), "rejected from the header");
    assert_eq!(blobs(&server).len(), 1, "only the upload itself is stored, no thumbnail");

    let download =
        get(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/localhost/{id}"))
            .await;
    assert_eq!(download.status, 200);
    assert_eq!(download.bytes, bomb);

    let pdf = media_id(&upload(&server, &alice, b"%PDF-1.7".to_vec(), "application/pdf").await);
    let path = format!("/_matrix/client/v1/media/thumbnail/localhost/{pdf}?width=96&height=96");
    let not_an_image = get(&server, Some(&alice), &path).await;
    not_an_image.assert_error(400, "M_UNKNOWN");
    caduceus_tests::assert_matches_spec("GET", THUMBNAIL, 400, &not_an_image.json());
    assert!(temp_files(&server).is_empty());
}

#[tokio::test]
async fn kill_9_during_upload_leaves_no_partial_media() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let kept = png(64, 48);
    let kept_id = media_id(&upload(&server, &alice, kept.clone(), "image/png").await);

    let stream = start_slow_upload(&server, &alice, 5_000_000, 300_000).await;
    server.kill_9();
    drop(stream);
    let partial = temp_files(&server);
    assert_eq!(partial.len(), 1, "the interrupted upload left its temp file: {partial:?}");
    assert_eq!(blobs(&server).len(), 1, "only the finished upload is a blob");

    server.restart().await;
    assert!(temp_files(&server).is_empty(), "the restart deleted {partial:?}");
    assert_eq!(blobs(&server).len(), 1);

    let download = get(
        &server,
        Some(&alice),
        &format!("/_matrix/client/v1/media/download/localhost/{kept_id}"),
    )
    .await;
    assert_eq!(download.status, 200, "acknowledged media survive SIGKILL");
    assert_eq!(download.bytes, kept);

    let again = upload(&server, &alice, b"after the restart".to_vec(), "text/plain").await;
    assert_eq!(again.status, 200, "uploads work after the restart");
    assert!(temp_files(&server).is_empty());
}

#[tokio::test]
async fn avatars_from_uploaded_media() {
    let server = TestServer::start_with_several_devices().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let alice_client = server.sdk_client().await;
    alice_client.matrix_auth().login_username("alice", PASSWORD).send().await.expect("login");
    let bob_client = server.sdk_client().await;
    bob_client.matrix_auth().login_username("bob", PASSWORD).send().await.expect("login");

    let photo = png(640, 480);
    let uri = alice_client
        .media()
        .upload(&mime::IMAGE_PNG, photo.clone(), None)
        .await
        .expect("uploading the photo")
        .content_uri;

    // Alice uses the photo as her avatar and as the avatar of a room Bob joins.
    alice_client.account().set_avatar_url(Some(&uri)).await.expect("setting the user avatar");
    let created = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            &serde_json::json!({
                "invite": [bob.user_id],
                "initial_state": [{ "type": "m.room.avatar", "state_key": "", "content": { "url": uri } }],
            }),
        )
        .await;
    created.assert_status(200);
    let room_id = created.str_field("room_id").to_owned();
    let room_path = caduceus_tests::encode_path_segment(&room_id);
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room_path}/join"),
            Some(&bob.access_token),
            &serde_json::json!({}),
        )
        .await
        .assert_status(200);

    // Bob finds both avatars and downloads them, and a thumbnail, with his own client.
    let state = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room_path}/state/m.room.avatar"),
            Some(&bob.access_token),
        )
        .await;
    state.assert_status(200);
    let room_avatar: OwnedMxcUri = state.body["url"].as_str().expect("a room avatar URL").into();
    let profile = bob_client
        .account()
        .fetch_user_profile_of(&alice.user_id.parse::<matrix_sdk::ruma::OwnedUserId>().unwrap())
        .await
        .expect("reading Alice's profile");
    let user_avatar: OwnedMxcUri =
        profile.get("avatar_url").and_then(|v| v.as_str()).expect("an avatar URL").into();
    for avatar in [room_avatar, user_avatar.clone()] {
        let file = MediaRequestParameters {
            source: MediaSource::Plain(avatar),
            format: MediaFormat::File,
        };
        let bytes = bob_client.media().get_media_content(&file, false).await.expect("downloading");
        assert_eq!(bytes, photo, "Bob receives Alice's photo");
    }
    let small = MediaRequestParameters {
        source: MediaSource::Plain(user_avatar),
        format: MediaFormat::Thumbnail(MediaThumbnailSettings::new(uint!(96), uint!(96))),
    };
    let thumbnail = bob_client.media().get_media_content(&small, false).await.expect("thumbnail");
    let image = image::load_from_memory(&thumbnail).expect("the thumbnail is an image");
    assert!(image.width() <= 320, "a thumbnail, not the 640 px original: {}", image.width());
    assert!(image.height() <= 240, "a thumbnail, not the 480 px original: {}", image.height());
}
