//! The media repository: uploads, downloads and thumbnails of the files clinicians share, such
//! as wound photos, scans and documents, which clients usually encrypt before uploading.
//!
//! Metadata lives in RocksDB (`MEDIA`, `MEDIA_PENDING`, `MEDIA_THUMBNAILS`); bytes live in a
//! [`MediaStore`], content-addressed by SHA-256. An upload writes and syncs its blob before the
//! metadata that points to it is committed, so a media ID never refers to missing or partial
//! bytes. A crash in between leaves at worst a blob that nothing refers to.

pub mod store;
pub mod thumbnail;

use std::collections::HashSet;
use std::future::Future;
use std::io::Cursor;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use caduceus_config::{Config, RateLimit};
use ruma::{OwnedMxcUri, OwnedServerName, OwnedUserId, ServerName, UserId};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{Notify, Semaphore};

use self::store::{LocalMediaStore, MediaStore};
pub use self::thumbnail::Method as ThumbnailMethod;
use self::thumbnail::{RenderError, ThumbnailSize, MAX_PIXELS, MAX_SIDE, THUMBNAIL_SOURCE_TYPES};
use crate::error::{Error, ErrorCode, Result};
use crate::service::now_ms;
use crate::service::rate_limit::RateLimiter;
use crate::storage::codec::prefix;
use crate::storage::tables::{
    MediaContent, MediaRecord, ThumbnailRecord, MEDIA, MEDIA_PENDING, MEDIA_THUMBNAILS,
};
use crate::storage::Db;

/// How long a media ID reserved with `POST /_matrix/media/v1/create` waits for its content: 24
/// hours, the expiry that the specification recommends.
pub const UNUSED_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest a download waits for content that has not been uploaded yet, whatever the
/// client's `timeout_ms`.
pub const MAX_DOWNLOAD_WAIT: Duration = Duration::from_secs(60);

/// How long an upload may go without receiving any bytes before it is abandoned, so a stalled
/// client cannot hold a temp file forever.
const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How many thumbnails are rendered at once. Each render may hold a decoded image of up to
/// 400 MB (see [`thumbnail::MAX_PIXELS`]), on top of the original file.
const CONCURRENT_RENDERS: usize = 2;

const MEDIA_ID_LENGTH: usize = 24;
const MAX_MEDIA_ID_BYTES: usize = 255;
const MAX_FILE_NAME_BYTES: usize = 255;
const MAX_CONTENT_TYPE_BYTES: usize = 255;
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Content types that may be served with `Content-Disposition: inline`: the list the Matrix
/// specification gives under "Serving inline content". A browser renders these with the type's
/// own viewer and never runs them as a page, so they cannot carry a cross-site scripting attack.
/// Everything else, including HTML, SVG and PDF, is served as an attachment.
const INLINE_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// The body of an upload as it arrives from the client.
pub trait UploadSource: Send {
    /// The length the client announced in `Content-Length`, if it did.
    fn declared_len(&self) -> Option<u64>;

    /// Returns the next part of the body, or `None` at its end. A body that breaks off returns
    /// the error to send to the client.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send;
}

/// What the client sent along with an upload.
#[derive(Debug, Clone, Default)]
pub struct UploadInfo {
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `filename` query parameter.
    pub file_name: Option<String>,
}

/// Whether a browser may show a file in place or must offer it as a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Inline,
    Attachment,
}

/// A file to send to a client.
pub struct MediaFile {
    pub content_type: String,
    pub file_name: Option<String>,
    pub disposition: Disposition,
    /// Size in bytes.
    pub size: u64,
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
}

/// A media ID reserved for a later upload.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub content_uri: OwnedMxcUri,
    /// Milliseconds since the Unix epoch after which the media ID lapses unless uploaded to.
    pub unused_expires_ts: u64,
}

/// A thumbnail request: the smallest size the client wants, and how to fit the image into it.
#[derive(Debug, Clone, Copy)]
pub struct ThumbnailRequest {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

struct StoredBlob {
    sha256: String,
    size: u64,
}

pub struct Media {
    db: Arc<Db>,
    store: Arc<dyn MediaStore>,
    server_name: OwnedServerName,
    max_upload_bytes: u64,
    max_pending_uploads: usize,
    upload_limiter: RateLimiter<OwnedUserId>,
    /// Woken whenever content arrives for a reserved media ID, so waiting downloads re-check.
    uploaded: Notify,
    /// Reserved media IDs with an upload under way, so two uploads cannot both fill one ID.
    uploads_in_progress: Mutex<HashSet<String>>,
    /// Serialises counting a user's pending reservations with adding one.
    reserve_lock: Mutex<()>,
    renders: Semaphore,
}

impl Media {
    /// Opens the media repository with blobs under `<data_dir>/media`, deleting what an
    /// interrupted upload left in its temp folder. The caller holds the database lock, so no
    /// other server uses this data dir.
    pub fn open_local(
        config: &Config,
        server_name: OwnedServerName,
        db: Arc<Db>,
    ) -> anyhow::Result<Self> {
        let root = config.storage.data_dir.join("media");
        let store = LocalMediaStore::open(&root)
            .with_context(|| format!("cannot open the media store in {}", root.display()))?;
        Ok(Self::new(config, server_name, db, Arc::new(store)))
    }

    pub fn new(
        config: &Config,
        server_name: OwnedServerName,
        db: Arc<Db>,
        store: Arc<dyn MediaStore>,
    ) -> Self {
        Self {
            db,
            store,
            server_name,
            max_upload_bytes: config.media.max_upload_bytes,
            max_pending_uploads: config.media.max_pending_uploads as usize,
            upload_limiter: RateLimiter::new(RateLimit {
                per_second: f64::from(config.media.uploads_per_minute) / 60.0,
                burst: config.media.uploads_per_minute,
            }),
            uploaded: Notify::new(),
            uploads_in_progress: Mutex::new(HashSet::new()),
            reserve_lock: Mutex::new(()),
            renders: Semaphore::new(CONCURRENT_RENDERS),
        }
    }

    /// The largest upload accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// Stores an upload under a new media ID and returns its `mxc://` URI.
    pub async fn upload(
        &self,
        sender: &UserId,
        info: UploadInfo,
        source: &mut impl UploadSource,
    ) -> Result<OwnedMxcUri> {
        self.check_rate(sender)?;
        let (content_type, file_name) = check_upload_info(info)?;
        let blob = self.write_blob(source).await?;

        let media_id = new_media_id();
        let now = now_ms();
        let record = MediaRecord {
            uploader: sender.to_string(),
            created_ts: now,
            unused_expires_ts: None,
            content: Some(MediaContent {
                content_type,
                file_name,
                size: blob.size,
                sha256: blob.sha256,
                uploaded_ts: now,
            }),
        };
        self.db.put(&MEDIA, &media_id, &record)?;
        tracing::debug!(media_id, size = blob.size, "media uploaded");
        Ok(self.mxc_uri(&media_id))
    }

    /// Reserves a media ID whose content the sender uploads later with
    /// [`Media::upload_reserved`].
    pub fn reserve(&self, sender: &UserId) -> Result<Reservation> {
        self.check_rate(sender)?;
        let user_id = sender.to_string();
        let now = now_ms();

        let _guard = self.reserve_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut batch = self.db.batch();
        let mut pending = 0;
        for ((_, media_id), expires_ts) in
            self.db.scan_prefix(&MEDIA_PENDING, &prefix(&[&user_id]))?
        {
            if expires_ts <= now {
                // A lapsed reservation is dropped here, the next time its owner reserves.
                batch.delete(&MEDIA_PENDING, &(user_id.clone(), media_id.clone()));
                batch.delete(&MEDIA, &media_id);
            } else {
                pending += 1;
            }
        }
        if pending >= self.max_pending_uploads {
            self.db.commit(batch)?;
            return Err(Error::new(
                ErrorCode::LimitExceeded { retry_after: None },
                format!(
                    "You have {pending} reserved media IDs still waiting for their uploads; \
                     upload to them, or wait until they expire, before reserving more"
                ),
            ));
        }

        let media_id = new_media_id();
        let unused_expires_ts = now + UNUSED_EXPIRY.as_millis() as u64;
        let record = MediaRecord {
            uploader: user_id.clone(),
            created_ts: now,
            unused_expires_ts: Some(unused_expires_ts),
            content: None,
        };
        batch.put(&MEDIA, &media_id, &record);
        batch.put(&MEDIA_PENDING, &(user_id, media_id.clone()), &unused_expires_ts);
        self.db.commit(batch)?;
        Ok(Reservation { content_uri: self.mxc_uri(&media_id), unused_expires_ts })
    }

    /// Stores the content of a media ID that the sender reserved.
    pub async fn upload_reserved(
        &self,
        sender: &UserId,
        server_name: &ServerName,
        media_id: &str,
        info: UploadInfo,
        source: &mut impl UploadSource,
    ) -> Result<()> {
        let unknown = || {
            Error::not_found(format!(
                "There is no reserved media ID mxc://{server_name}/{media_id}; \
                 reserve one with POST /_matrix/media/v1/create"
            ))
        };
        if server_name != self.server_name || !is_valid_media_id(media_id) {
            return Err(unknown());
        }
        let media_id = media_id.to_owned();
        let mut record = self.db.get(&MEDIA, &media_id)?.ok_or_else(unknown)?;
        if record.uploader != sender.as_str() {
            return Err(Error::forbidden(
                "Only the user who reserved this media ID can upload to it",
            ));
        }
        if record.content.is_some() {
            return Err(already_uploaded());
        }
        if record.unused_expires_ts.is_some_and(|expires_ts| expires_ts <= now_ms()) {
            return Err(Error::not_found(
                "This media ID expired before its content was uploaded; reserve a new one",
            ));
        }
        let (content_type, file_name) = check_upload_info(info)?;

        let _claim = UploadClaim::take(&self.uploads_in_progress, &media_id)?;
        let blob = self.write_blob(source).await?;

        // The claim keeps every other upload to this ID out, so the record read above is still
        // the stored one.
        record.unused_expires_ts = None;
        record.content = Some(MediaContent {
            content_type,
            file_name,
            size: blob.size,
            sha256: blob.sha256,
            uploaded_ts: now_ms(),
        });
        let mut batch = self.db.batch();
        batch.put(&MEDIA, &media_id, &record);
        batch.delete(&MEDIA_PENDING, &(record.uploader.clone(), media_id.clone()));
        self.db.commit(batch)?;
        self.uploaded.notify_waiters();
        tracing::debug!(media_id, size = blob.size, "reserved media uploaded");
        Ok(())
    }

    /// Opens a file for download, waiting up to `timeout` (at most [`MAX_DOWNLOAD_WAIT`]) for
    /// content that was reserved but not uploaded yet. `file_name` replaces the uploaded name
    /// in the response, as the download endpoint with a file name in its path requires.
    pub async fn download(
        &self,
        server_name: &ServerName,
        media_id: &str,
        file_name: Option<String>,
        timeout: Duration,
    ) -> Result<MediaFile> {
        let content = self.wait_for_content(server_name, media_id, timeout).await?;
        let blob = self.open_blob(&content.sha256).await?;
        Ok(MediaFile {
            disposition: disposition_for(&content.content_type),
            content_type: content.content_type,
            file_name: file_name.or(content.file_name),
            size: blob.size,
            reader: blob.reader,
        })
    }

    /// Rejects every request to the unauthenticated download and thumbnail endpoints under
    /// `/_matrix/media/v3`.
    ///
    /// Since Matrix 1.11 the specification asks servers to "freeze" these endpoints: media
    /// uploaded before the freeze stay reachable there, and media uploaded after it are served
    /// only by the authenticated endpoints under `/_matrix/client/v1/media`, with 404
    /// `M_NOT_FOUND` on the old ones. This server never served unauthenticated downloads, so
    /// all its media count as uploaded after the freeze and every request gets 404. The same
    /// answer for existing and unknown media also tells an unauthenticated caller nothing about
    /// which media IDs exist.
    pub fn download_unauthenticated(&self) -> Result<MediaFile> {
        Err(Error::not_found(
            "Media on this server can only be downloaded with an access token, from \
             /_matrix/client/v1/media/download or /_matrix/client/v1/media/thumbnail",
        ))
    }

    /// Returns a thumbnail, rendering and caching it on first request. When no default size is
    /// as large as the request, a full-size still of the image is returned instead.
    pub async fn thumbnail(
        &self,
        server_name: &ServerName,
        media_id: &str,
        request: ThumbnailRequest,
        timeout: Duration,
    ) -> Result<MediaFile> {
        if request.width == 0 || request.height == 0 {
            return Err(Error::invalid_param("The thumbnail width and height must be at least 1"));
        }
        let content = self.wait_for_content(server_name, media_id, timeout).await?;
        let content_type = media_type_essence(&content.content_type);
        if !THUMBNAIL_SOURCE_TYPES.contains(&content_type.as_str()) {
            return Err(Error::new(
                ErrorCode::Unknown,
                format!(
                    "Cannot generate thumbnails for content of type {content_type}; only \
                     JPEG, PNG, GIF and WebP images have thumbnails"
                ),
            ));
        }

        let size = thumbnail::choose_size(request.width, request.height, request.method);
        let key = (media_id.to_owned(), size.key());
        if let Some(cached) = self.db.get(&MEDIA_THUMBNAILS, &key)? {
            // A missing blob is our own fault; rendering again repairs it.
            if let Some(blob) = self.store.open(&cached.sha256).await.map_err(io_error)? {
                return Ok(thumbnail_file(&cached.content_type, blob.size, blob.reader));
            }
            tracing::warn!(
                media_id,
                sha256 = cached.sha256,
                "a cached thumbnail's blob is missing"
            );
        }

        let rendered = self.render(&content, size).await?;
        let sha256 = hex_sha256(&rendered.bytes);
        let mut writer = self.store.create().await.map_err(io_error)?;
        writer.write(&rendered.bytes).await.map_err(io_error)?;
        writer.commit(&sha256).await.map_err(io_error)?;
        let record = ThumbnailRecord {
            content_type: rendered.content_type.to_owned(),
            width: rendered.width,
            height: rendered.height,
            size: rendered.bytes.len() as u64,
            sha256,
            created_ts: now_ms(),
        };
        self.db.put(&MEDIA_THUMBNAILS, &key, &record)?;
        tracing::debug!(media_id, size = size.key(), "thumbnail rendered");

        let length = rendered.bytes.len() as u64;
        Ok(thumbnail_file(rendered.content_type, length, Box::pin(Cursor::new(rendered.bytes))))
    }

    /// Rejects URL preview requests, because previews are disabled: fetching a URL would show
    /// the linked site that someone on this server is looking at it, and the URLs that
    /// clinicians share can reveal patient details.
    pub fn preview_url(&self, _url: &str) -> Result<()> {
        // TODO: fetching and parsing previews is not built; a setting to enable them should
        // come with it.
        Err(Error::forbidden("URL previews are disabled on this server"))
    }

    fn check_rate(&self, sender: &UserId) -> Result<()> {
        self.upload_limiter.acquire(&sender.to_owned()).map_err(|retry_after| {
            Error::new(
                ErrorCode::LimitExceeded { retry_after: Some(retry_after) },
                "Too many uploads; wait before uploading again",
            )
        })
    }

    fn mxc_uri(&self, media_id: &str) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{media_id}", self.server_name))
    }

    /// Streams an upload into a new blob while hashing it. On any error the partial blob is
    /// dropped, which deletes it.
    async fn write_blob(&self, source: &mut impl UploadSource) -> Result<StoredBlob> {
        let limit = self.max_upload_bytes;
        if source.declared_len().is_some_and(|declared| declared > limit) {
            return Err(too_large(limit));
        }

        let mut writer = self.store.create().await.map_err(io_error)?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        loop {
            let chunk = match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, source.next_chunk()).await {
                Ok(chunk) => chunk?,
                Err(_) => {
                    return Err(Error::with_status(
                        ErrorCode::Unknown,
                        http::StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "The upload stalled: no data arrived for {} seconds",
                            UPLOAD_IDLE_TIMEOUT.as_secs()
                        ),
                    ));
                }
            };
            let Some(chunk) = chunk else { break };
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(limit));
            }
            hasher.update(&chunk);
            writer.write(&chunk).await.map_err(io_error)?;
        }

        if let Some(declared) = source.declared_len() {
            if declared != size {
                return Err(truncated(size, declared));
            }
        }
        let sha256 = format!("{:x}", hasher.finalize());
        writer.commit(&sha256).await.map_err(io_error)?;
        Ok(StoredBlob { sha256, size })
    }

    /// Returns the content of a local media ID, waiting up to `timeout` for a reserved one to be
    /// uploaded.
    async fn wait_for_content(
        &self,
        server_name: &ServerName,
        media_id: &str,
        timeout: Duration,
    ) -> Result<MediaContent> {
        if server_name != self.server_name {
            return Err(Error::not_found(format!(
                "This server holds no media from {server_name}; it does not fetch media from \
                 other servers"
            )));
        }
        let unknown =
            || Error::not_found(format!("There is no media mxc://{server_name}/{media_id}"));
        if !is_valid_media_id(media_id) {
            return Err(unknown());
        }

        let deadline = tokio::time::Instant::now() + timeout.min(MAX_DOWNLOAD_WAIT);
        let key = media_id.to_owned();
        loop {
            // Register for the wake-up before reading, so an upload that completes between the
            // read and the wait is not missed.
            let notified = self.uploaded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let record = self.db.get(&MEDIA, &key)?.ok_or_else(unknown)?;
            if let Some(content) = record.content {
                return Ok(content);
            }
            if record.unused_expires_ts.is_some_and(|expires_ts| expires_ts <= now_ms()) {
                return Err(unknown());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::new(
                    ErrorCode::NotYetUploaded,
                    "The content of this media has not been uploaded yet",
                ));
            }
        }
    }

    async fn open_blob(&self, sha256: &str) -> Result<store::Blob> {
        self.store
            .open(sha256)
            .await
            .map_err(io_error)?
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("the media blob {sha256} is missing")))
    }

    async fn render(
        &self,
        content: &MediaContent,
        size: ThumbnailSize,
    ) -> Result<thumbnail::Rendered> {
        let _permit = self.renders.acquire().await.map_err(|error| {
            Error::Internal(anyhow::anyhow!("the render queue is closed: {error}"))
        })?;

        let mut blob = self.open_blob(&content.sha256).await?;
        let mut original = Vec::with_capacity(usize::try_from(blob.size).unwrap_or(0));
        blob.reader.read_to_end(&mut original).await.map_err(io_error)?;

        let rendered =
            tokio::task::spawn_blocking(move || thumbnail::render(&original, size)).await?;
        rendered.map_err(|error| match error {
            RenderError::TooLarge { width, height } => Error::new(
                ErrorCode::TooLarge,
                format!(
                    "The image is {width} x {height} pixels, too large to thumbnail; thumbnails \
                     are made for images of up to {MAX_SIDE} x {MAX_SIDE} pixels and {} \
                     megapixels",
                    MAX_PIXELS / 1_000_000
                ),
            ),
            RenderError::UnsupportedFormat | RenderError::Decode(_) => Error::new(
                ErrorCode::Unknown,
                format!("Cannot generate a thumbnail for this content: {error}"),
            ),
            RenderError::Encode(error) => {
                Error::Internal(anyhow::anyhow!("encoding a thumbnail failed: {error}"))
            }
        })
    }
}

/// Marks a reserved media ID as being uploaded to, until dropped.
struct UploadClaim<'a> {
    claims: &'a Mutex<HashSet<String>>,
    media_id: String,
}

impl<'a> UploadClaim<'a> {
    fn take(claims: &'a Mutex<HashSet<String>>, media_id: &str) -> Result<Self> {
        let mut set = claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !set.insert(media_id.to_owned()) {
            return Err(Error::new(
                ErrorCode::CannotOverwriteMedia,
                "Another upload to this media ID is in progress",
            ));
        }
        Ok(Self { claims, media_id: media_id.to_owned() })
    }
}

impl Drop for UploadClaim<'_> {
    fn drop(&mut self) {
        let mut set = self.claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        set.remove(&self.media_id);
    }
}

fn thumbnail_file(
    content_type: &str,
    size: u64,
    reader: Pin<Box<dyn AsyncRead + Send>>,
) -> MediaFile {
    let extension = if content_type == "image/jpeg" { "jpg" } else { "png" };
    MediaFile {
        content_type: content_type.to_owned(),
        file_name: Some(format!("thumbnail.{extension}")),
        disposition: Disposition::Inline,
        size,
        reader,
    }
}

/// Checks the content type and file name of an upload, and returns them with defaults applied.
fn check_upload_info(info: UploadInfo) -> Result<(String, Option<String>)> {
    let content_type = match info.content_type.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_CONTENT_TYPE.to_owned(),
        Some(value) => {
            let printable = value.bytes().all(|byte| byte == b'\t' || (0x20..0x7f).contains(&byte));
            let essence = media_type_essence(value);
            let well_formed = essence
                .split_once('/')
                .is_some_and(|(kind, subtype)| is_token(kind) && is_token(subtype));
            if value.len() > MAX_CONTENT_TYPE_BYTES || !printable || !well_formed {
                return Err(Error::invalid_param(format!(
                    "The Content-Type {value:?} is not a valid media type such as image/jpeg"
                )));
            }
            value.to_owned()
        }
    };

    let file_name = match info.file_name {
        None => None,
        Some(name) if name.is_empty() => None,
        Some(name) if name.len() > MAX_FILE_NAME_BYTES => {
            return Err(Error::invalid_param(format!(
                "The file name is {} bytes long; the limit is {MAX_FILE_NAME_BYTES}",
                name.len()
            )));
        }
        Some(name) if name.chars().any(char::is_control) => {
            return Err(Error::invalid_param("The file name must not contain control characters"));
        }
        Some(name) => Some(name),
    };
    Ok((content_type, file_name))
}

/// The `type/subtype` part of a media type, lowercased and without parameters.
fn media_type_essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether `text` is a token as HTTP defines it (RFC 9110, section 5.6.2).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

fn disposition_for(content_type: &str) -> Disposition {
    if INLINE_CONTENT_TYPES.contains(&media_type_essence(content_type).as_str()) {
        Disposition::Inline
    } else {
        Disposition::Attachment
    }
}

/// Whether a media ID has only the characters that the specification allows (`A-Za-z0-9_-`),
/// which also keeps it from reaching outside the media store.
fn is_valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= MAX_MEDIA_ID_BYTES
        && media_id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

fn new_media_id() -> String {
    crate::service::accounts::random_string(MEDIA_ID_LENGTH)
}

/// The SHA-256 of `bytes` in lowercase hex, the form blob names take.
fn hex_sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn too_large(limit: u64) -> Error {
    Error::new(
        ErrorCode::TooLarge,
        format!("The upload is larger than this server's limit of {limit} bytes"),
    )
}

fn truncated(received: u64, declared: u64) -> Error {
    Error::new(
        ErrorCode::Unknown,
        format!(
            "The upload ended after {received} of the {declared} bytes that Content-Length \
             announced; nothing was stored"
        ),
    )
}

fn already_uploaded() -> Error {
    Error::new(
        ErrorCode::CannotOverwriteMedia,
        "This media ID already has content, and media cannot be replaced",
    )
}

fn io_error(error: std::io::Error) -> Error {
    Error::Internal(anyhow::Error::new(error).context("media store"))
}

#[cfg(test)]
mod tests;
