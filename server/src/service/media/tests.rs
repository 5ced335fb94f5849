//! Media service tests against a real RocksDB and real files in temp dirs.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};
use ruma::{server_name, user_id};

use super::*;

const ALICE: &str = "@alice:localhost";

struct Fixture {
    _dir: tempfile::TempDir,
    media_root: PathBuf,
    db: Arc<Db>,
    media: Media,
}

impl Fixture {
    fn new() -> Self {
        Self::with_config(|_| {})
    }

    fn with_config(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_owned();
        adjust(&mut config);
        let db = Arc::new(Db::open(&dir.path().join("db")).unwrap());
        let media =
            Media::open_local(&config, server_name!("localhost").to_owned(), db.clone()).unwrap();
        Self { media_root: dir.path().join("media"), _dir: dir, db, media }
    }

    fn blobs(&self) -> Vec<PathBuf> {
        files_under(&self.media_root.join("blobs"))
    }

    fn temp_files(&self) -> Vec<PathBuf> {
        files_under(&self.media_root.join("tmp"))
    }

    fn media_records(&self) -> usize {
        self.db.scan_all(&MEDIA).unwrap().len()
    }

    async fn upload(&self, bytes: &[u8], content_type: &str) -> OwnedMxcUri {
        let info = UploadInfo { content_type: Some(content_type.to_owned()), file_name: None };
        let mut source = Chunks::whole(bytes);
        self.media.upload(user_id!("@alice:localhost"), info, &mut source).await.unwrap()
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

/// An upload body made of fixed chunks, optionally ending in an error or announcing a length.
struct Chunks {
    chunks: VecDeque<Result<Bytes>>,
    declared_len: Option<u64>,
}

impl Chunks {
    fn whole(bytes: &[u8]) -> Self {
        Self {
            chunks: bytes.chunks(1000).map(|chunk| Ok(Bytes::copy_from_slice(chunk))).collect(),
            declared_len: Some(bytes.len() as u64),
        }
    }
}

impl UploadSource for Chunks {
    fn declared_len(&self) -> Option<u64> {
        self.declared_len
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        self.chunks.pop_front().transpose()
    }
}

fn media_id(uri: &OwnedMxcUri) -> String {
    uri.media_id().unwrap().to_owned()
}

async fn read_all(file: MediaFile) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut reader = file.reader;
    reader.read_to_end(&mut bytes).await.unwrap();
    bytes
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    bytes
}

/// Builds a PNG of a few dozen bytes whose IHDR chunk claims `width` x `height` pixels. Its
/// image data is a stub, so only a decoder that trusts the header would allocate the pixels.
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

/// CRC-32 as PNG chunks use it (ISO 3309, reflected polynomial 0xEDB88320).
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

#[tokio::test]
async fn upload_writes_blob_and_metadata() {
    let fixture = Fixture::new();
    let bytes = b"a scan of a discharge letter".repeat(100);
    let info = UploadInfo {
        content_type: Some("application/pdf".to_owned()),
        file_name: Some("letter.pdf".to_owned()),
    };
    let uri = fixture
        .media
        .upload(user_id!("@alice:localhost"), info, &mut Chunks::whole(&bytes))
        .await
        .unwrap();
    assert_eq!(uri.server_name().unwrap(), "localhost");

    let sha256 = hex_sha256(&bytes);
    let blob = fixture.media_root.join("blobs").join(&sha256[..2]).join(&sha256);
    assert_eq!(std::fs::read(&blob).unwrap(), bytes, "the blob is named by its SHA-256");
    assert!(fixture.temp_files().is_empty(), "the temp file was renamed away");

    let record = fixture.db.get(&MEDIA, &media_id(&uri)).unwrap().unwrap();
    assert_eq!(record.uploader, ALICE);
    let content = record.content.unwrap();
    assert_eq!(content.content_type, "application/pdf");
    assert_eq!(content.file_name.as_deref(), Some("letter.pdf"));
    assert_eq!(content.size, bytes.len() as u64);
    assert_eq!(content.sha256, sha256);

    let file = fixture
        .media
        .download(server_name!("localhost"), &media_id(&uri), None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(file.disposition, Disposition::Attachment, "PDF is not on the inline list");
    assert_eq!(file.file_name.as_deref(), Some("letter.pdf"));
    assert_eq!(file.size, bytes.len() as u64);
    assert_eq!(read_all(file).await, bytes);
}

#[tokio::test]
async fn identical_uploads_share_one_blob() {
    let fixture = Fixture::new();
    let first = fixture.upload(b"same bytes", "text/plain").await;
    let second = fixture.upload(b"same bytes", "text/plain").await;
    let other = fixture.upload(b"other bytes", "text/plain").await;

    assert_ne!(first, second, "each upload gets its own media ID");
    assert_ne!(first, other);
    assert_eq!(fixture.blobs().len(), 2, "two distinct contents, two blobs");
    assert!(fixture.temp_files().is_empty());

    for uri in [&first, &second] {
        let file = fixture
            .media
            .download(server_name!("localhost"), &media_id(uri), None, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(read_all(file).await, b"same bytes");
    }
}

#[tokio::test]
async fn oversized_upload_is_rejected_and_leaves_nothing() {
    let fixture = Fixture::with_config(|config| config.media.max_upload_bytes = 2048);
    let bytes = vec![7u8; 3000];

    // Announced too large: rejected before a temp file exists.
    let error = fixture
        .media
        .upload(user_id!("@alice:localhost"), UploadInfo::default(), &mut Chunks::whole(&bytes))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::TooLarge);

    // Sent without a length: rejected once the limit is passed.
    let mut unannounced = Chunks::whole(&bytes);
    unannounced.declared_len = None;
    let error = fixture
        .media
        .upload(user_id!("@alice:localhost"), UploadInfo::default(), &mut unannounced)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::TooLarge);

    assert!(fixture.temp_files().is_empty(), "the partial temp file was deleted");
    assert!(fixture.blobs().is_empty());
    assert_eq!(fixture.media_records(), 0);

    let exact = vec![7u8; 2048];
    fixture.upload(&exact, "application/octet-stream").await;
    assert_eq!(fixture.blobs().len(), 1, "an upload of exactly the limit is accepted");
}

#[tokio::test]
async fn truncated_upload_is_rejected_and_leaves_nothing() {
    let fixture = Fixture::new();

    // The body ends before the announced Content-Length.
    let mut short = Chunks::whole(&[1u8; 1500]);
    short.declared_len = Some(4000);
    let error = fixture
        .media
        .upload(user_id!("@alice:localhost"), UploadInfo::default(), &mut short)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Unknown);
    assert_eq!(error.code().status(), http::StatusCode::BAD_REQUEST);

    // The connection breaks in the middle of the body.
    let mut broken = Chunks::whole(&[2u8; 2500]);
    broken.declared_len = None;
    broken.chunks.truncate(2);
    broken.chunks.push_back(Err(Error::new(ErrorCode::Unknown, "connection closed")));
    let error = fixture
        .media
        .upload(user_id!("@alice:localhost"), UploadInfo::default(), &mut broken)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Unknown);

    assert!(fixture.temp_files().is_empty());
    assert!(fixture.blobs().is_empty());
    assert_eq!(fixture.media_records(), 0);
}

#[tokio::test]
async fn invalid_content_type_is_rejected_before_writing() {
    let fixture = Fixture::new();
    for content_type in ["image", "image/", "text/plain\u{7f}", "a b/c"] {
        let info = UploadInfo { content_type: Some(content_type.to_owned()), file_name: None };
        let error = fixture
            .media
            .upload(user_id!("@alice:localhost"), info, &mut Chunks::whole(b"x"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidParam, "{content_type:?}");
    }
    let info = UploadInfo { content_type: None, file_name: Some("a\nb.txt".to_owned()) };
    let error = fixture
        .media
        .upload(user_id!("@alice:localhost"), info, &mut Chunks::whole(b"x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidParam);
    assert!(fixture.blobs().is_empty());
    assert_eq!(fixture.media_records(), 0);
}

#[tokio::test]
async fn missing_content_type_defaults_to_octet_stream() {
    let fixture = Fixture::new();
    let uri = fixture
        .media
        .upload(user_id!("@alice:localhost"), UploadInfo::default(), &mut Chunks::whole(b"x"))
        .await
        .unwrap();
    let file = fixture
        .media
        .download(server_name!("localhost"), &media_id(&uri), None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(file.content_type, "application/octet-stream");
    assert_eq!(file.disposition, Disposition::Attachment);
}

#[tokio::test]
async fn unknown_media_is_not_found() {
    let fixture = Fixture::new();
    let uri = fixture.upload(b"x", "text/plain").await;
    let cases = [
        (server_name!("localhost"), "doesNotExist123"),
        (server_name!("localhost"), "../../db/CURRENT"),
        (server_name!("localhost"), ""),
        (server_name!("other.example"), uri.media_id().unwrap()),
    ];
    for (server, id) in cases {
        let error = fixture.media.download(server, id, None, Duration::ZERO).await.err().unwrap();
        assert_eq!(error.code(), ErrorCode::NotFound, "{server}/{id}");
        let request = ThumbnailRequest { width: 32, height: 32, method: ThumbnailMethod::Crop };
        let error =
            fixture.media.thumbnail(server, id, request, Duration::ZERO).await.err().unwrap();
        assert_eq!(error.code(), ErrorCode::NotFound, "thumbnail {server}/{id}");
    }
}

#[tokio::test]
async fn unauthenticated_download_is_frozen() {
    let fixture = Fixture::new();
    fixture.upload(b"x", "text/plain").await;
    let error = fixture.media.download_unauthenticated().err().unwrap();
    assert_eq!(error.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn inline_only_for_safe_types() {
    let fixture = Fixture::new();
    let cases = [
        ("image/png", Disposition::Inline),
        ("image/jpeg", Disposition::Inline),
        ("text/plain; charset=utf-8", Disposition::Inline),
        ("VIDEO/MP4", Disposition::Inline),
        ("text/html", Disposition::Attachment),
        ("image/svg+xml", Disposition::Attachment),
        ("application/pdf", Disposition::Attachment),
        ("application/javascript", Disposition::Attachment),
    ];
    for (content_type, expected) in cases {
        let uri = fixture.upload(content_type.as_bytes(), content_type).await;
        let file = fixture
            .media
            .download(server_name!("localhost"), &media_id(&uri), None, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(file.disposition, expected, "{content_type}");
        assert_eq!(file.content_type, content_type, "the uploaded type is served unchanged");
    }
}

#[tokio::test]
async fn thumbnails_use_default_sizes_and_are_cached() {
    let fixture = Fixture::new();
    let uri = fixture.upload(&png(1000, 750), "image/png").await;
    let id = media_id(&uri);
    let cases = [
        ((20, 20, ThumbnailMethod::Crop), (32, 32)),
        ((96, 96, ThumbnailMethod::Crop), (96, 96)),
        ((300, 200, ThumbnailMethod::Scale), (320, 240)),
        ((500, 400, ThumbnailMethod::Scale), (640, 480)),
        ((700, 600, ThumbnailMethod::Scale), (800, 600)),
        ((900, 900, ThumbnailMethod::Scale), (1000, 750)),
    ];
    for ((width, height, method), expected) in cases {
        let request = ThumbnailRequest { width, height, method };
        let file = fixture
            .media
            .thumbnail(server_name!("localhost"), &id, request, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(file.content_type, "image/png");
        assert_eq!(file.disposition, Disposition::Inline);
        let bytes = read_all(file).await;
        let image = image::load_from_memory(&bytes).unwrap();
        assert_eq!((image.width(), image.height()), expected, "request {width}x{height}");
    }
    assert_eq!(fixture.db.scan_all(&MEDIA_THUMBNAILS).unwrap().len(), cases.len());

    // A second request is served from the cache: same bytes, no new record or blob.
    let blobs_before = fixture.blobs().len();
    let request = ThumbnailRequest { width: 96, height: 96, method: ThumbnailMethod::Crop };
    let again = fixture
        .media
        .thumbnail(server_name!("localhost"), &id, request, Duration::ZERO)
        .await
        .unwrap();
    let cached = fixture.db.get(&MEDIA_THUMBNAILS, &(id.clone(), "96x96-crop".to_owned())).unwrap();
    assert_eq!(hex_sha256(&read_all(again).await), cached.unwrap().sha256);
    assert_eq!(fixture.blobs().len(), blobs_before);
}

#[tokio::test]
async fn thumbnail_of_small_image_is_not_scaled_up() {
    let fixture = Fixture::new();
    let uri = fixture.upload(&png(40, 30), "image/png").await;
    let request = ThumbnailRequest { width: 320, height: 240, method: ThumbnailMethod::Scale };
    let file = fixture
        .media
        .thumbnail(server_name!("localhost"), &media_id(&uri), request, Duration::ZERO)
        .await
        .unwrap();
    let image = image::load_from_memory(&read_all(file).await).unwrap();
    assert_eq!((image.width(), image.height()), (40, 30));
}

#[tokio::test]
async fn image_bomb_header_is_refused_without_decoding() {
    let fixture = Fixture::new();
    let bomb = png_header_only(30_000, 30_000);
    assert!(bomb.len() < 100, "the crafted file is tiny: {} bytes", bomb.len());
    let uri = fixture.upload(&bomb, "image/png").await;
    let blobs_before = fixture.blobs().len();

    let request = ThumbnailRequest { width: 96, height: 96, method: ThumbnailMethod::Crop };
    let started = std::time::Instant::now();
    let error = fixture
        .media
        .thumbnail(server_name!("localhost"), &media_id(&uri), request, Duration::ZERO)
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), ErrorCode::TooLarge, "{error}");
    assert_eq!(error.code().status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    assert!(started.elapsed() < Duration::from_secs(2), "refused from the header, not decoded");

    assert!(fixture.db.scan_all(&MEDIA_THUMBNAILS).unwrap().is_empty());
    assert_eq!(fixture.blobs().len(), blobs_before, "no thumbnail blob was written");
    assert!(fixture.temp_files().is_empty());

    // The file itself can still be downloaded: it is only refused as a thumbnail source.
    let file = fixture
        .media
        .download(server_name!("localhost"), &media_id(&uri), None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(read_all(file).await, bomb);
}

#[tokio::test]
async fn thumbnail_of_non_image_is_rejected() {
    let fixture = Fixture::new();
    let request = ThumbnailRequest { width: 96, height: 96, method: ThumbnailMethod::Crop };
    let cases = [
        (b"encrypted bytes".to_vec(), "application/octet-stream"),
        (b"%PDF-1.7".to_vec(), "application/pdf"),
        (b"not really a png".to_vec(), "image/png"),
    ];
    for (bytes, content_type) in cases {
        let uri = fixture.upload(&bytes, content_type).await;
        let error = fixture
            .media
            .thumbnail(server_name!("localhost"), &media_id(&uri), request, Duration::ZERO)
            .await
            .err()
            .unwrap();
        assert_eq!(error.code(), ErrorCode::Unknown, "{content_type}");
        assert_eq!(error.code().status(), http::StatusCode::BAD_REQUEST);
    }

    let uri = fixture.upload(&png(10, 10), "image/png").await;
    let zero = ThumbnailRequest { width: 0, height: 10, method: ThumbnailMethod::Scale };
    let error = fixture
        .media
        .thumbnail(server_name!("localhost"), &media_id(&uri), zero, Duration::ZERO)
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), ErrorCode::InvalidParam);
}

#[tokio::test]
async fn reserved_media_accepts_one_upload_from_its_creator() {
    let fixture = Fixture::new();
    let alice = user_id!("@alice:localhost");
    let bob = user_id!("@bob:localhost");
    let reservation = fixture.media.reserve(alice).unwrap();
    assert!(reservation.unused_expires_ts > now_ms());
    let id = media_id(&reservation.content_uri);
    let server = server_name!("localhost");

    let error = fixture.media.download(server, &id, None, Duration::ZERO).await.err().unwrap();
    assert_eq!(error.code(), ErrorCode::NotYetUploaded);
    assert_eq!(error.code().status(), http::StatusCode::GATEWAY_TIMEOUT);

    let error = fixture
        .media
        .upload_reserved(bob, server, &id, UploadInfo::default(), &mut Chunks::whole(b"bob's"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Forbidden);
    assert!(fixture.blobs().is_empty(), "a rejected upload writes nothing");

    let info = UploadInfo { content_type: Some("text/plain".to_owned()), file_name: None };
    fixture
        .media
        .upload_reserved(alice, server, &id, info, &mut Chunks::whole(b"alice's"))
        .await
        .unwrap();
    let file = fixture.media.download(server, &id, None, Duration::ZERO).await.unwrap();
    assert_eq!(read_all(file).await, b"alice's");
    assert!(fixture.db.scan_all(&MEDIA_PENDING).unwrap().is_empty());

    let error = fixture
        .media
        .upload_reserved(alice, server, &id, UploadInfo::default(), &mut Chunks::whole(b"again"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::CannotOverwriteMedia);
    assert_eq!(error.code().status(), http::StatusCode::CONFLICT);

    let error = fixture
        .media
        .upload_reserved(
            alice,
            server,
            "neverReserved",
            UploadInfo::default(),
            &mut Chunks::whole(b"x"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn download_waits_for_reserved_upload() {
    let fixture = Arc::new(Fixture::new());
    let alice = user_id!("@alice:localhost");
    let reservation = fixture.media.reserve(alice).unwrap();
    let id = media_id(&reservation.content_uri);

    let waiting = {
        let fixture = fixture.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let file = fixture
                .media
                .download(server_name!("localhost"), &id, None, Duration::from_secs(10))
                .await
                .unwrap();
            read_all(file).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the download waits for the content");

    fixture
        .media
        .upload_reserved(
            alice,
            server_name!("localhost"),
            &id,
            UploadInfo::default(),
            &mut Chunks::whole(b"late"),
        )
        .await
        .unwrap();
    let bytes = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    assert_eq!(bytes, b"late");
}

#[tokio::test]
async fn expired_reservation_is_gone() {
    let fixture = Fixture::new();
    let alice = user_id!("@alice:localhost");
    let id = media_id(&fixture.media.reserve(alice).unwrap().content_uri);
    let mut record = fixture.db.get(&MEDIA, &id).unwrap().unwrap();
    record.unused_expires_ts = Some(now_ms() - 1);
    fixture.db.put(&MEDIA, &id, &record).unwrap();
    fixture.db.put(&MEDIA_PENDING, &(ALICE.to_owned(), id.clone()), &(now_ms() - 1)).unwrap();

    let server = server_name!("localhost");
    let error = fixture
        .media
        .upload_reserved(alice, server, &id, UploadInfo::default(), &mut Chunks::whole(b"x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::NotFound);
    let error = fixture.media.download(server, &id, None, Duration::ZERO).await.err().unwrap();
    assert_eq!(error.code(), ErrorCode::NotFound);

    // The next reservation drops the lapsed one.
    fixture.media.reserve(alice).unwrap();
    assert!(fixture.db.get(&MEDIA, &id).unwrap().is_none());
    assert_eq!(fixture.db.scan_all(&MEDIA_PENDING).unwrap().len(), 1);
}

#[tokio::test]
async fn pending_reservations_are_limited() {
    let fixture = Fixture::with_config(|config| config.media.max_pending_uploads = 2);
    let alice = user_id!("@alice:localhost");
    fixture.media.reserve(alice).unwrap();
    fixture.media.reserve(alice).unwrap();
    let error = fixture.media.reserve(alice).unwrap_err();
    assert!(matches!(error.code(), ErrorCode::LimitExceeded { .. }), "{error}");
    fixture.media.reserve(user_id!("@bob:localhost")).expect("the limit is per user");
    assert_eq!(fixture.db.scan_all(&MEDIA_PENDING).unwrap().len(), 3);
}

#[tokio::test]
async fn upload_rate_is_limited_per_user() {
    let fixture = Fixture::with_config(|config| config.media.uploads_per_minute = 2);
    fixture.upload(b"1", "text/plain").await;
    fixture.upload(b"2", "text/plain").await;
    let error = fixture
        .media
        .upload(user_id!("@alice:localhost"), UploadInfo::default(), &mut Chunks::whole(b"3"))
        .await
        .unwrap_err();
    match error.code() {
        ErrorCode::LimitExceeded { retry_after: Some(retry_after) } => {
            assert!(retry_after > Duration::ZERO, "{retry_after:?}");
            assert!(retry_after <= Duration::from_secs(30), "{retry_after:?}");
        }
        other => panic!("expected M_LIMIT_EXCEEDED with a retry delay, got {other:?}"),
    }
    assert_eq!(fixture.blobs().len(), 2, "the limited upload wrote nothing");
    fixture
        .media
        .upload(user_id!("@bob:localhost"), UploadInfo::default(), &mut Chunks::whole(b"3"))
        .await
        .expect("another user is not limited");
}

#[test]
fn temp_files_are_deleted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(tmp.join("nested")).unwrap();
    std::fs::write(tmp.join("abc.part"), b"half an upload").unwrap();
    std::fs::write(tmp.join("nested").join("x"), b"y").unwrap();
    let blob_dir = dir.path().join("blobs").join("ab");
    std::fs::create_dir_all(&blob_dir).unwrap();
    std::fs::write(blob_dir.join("kept"), b"complete").unwrap();

    LocalMediaStore::open(dir.path()).unwrap();
    assert!(files_under(&tmp).is_empty());
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert!(blob_dir.join("kept").exists(), "blobs are left alone");
}

#[tokio::test]
async fn store_rejects_names_that_are_not_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalMediaStore::open(dir.path()).unwrap();
    assert!(store.open("../../etc/passwd").await.is_err());
    assert!(store.open(&"A".repeat(64)).await.is_err(), "upper-case hex is not a blob name");
    assert!(store.open(&"a".repeat(64)).await.unwrap().is_none());

    let mut writer = store.create().await.unwrap();
    writer.write(b"x").await.unwrap();
    assert!(writer.commit("../escape").await.is_err());
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert!(files_under(dir.path()).is_empty());
}
