//! The catalogue of tables: every column family, its key, its record type and the service that
//! owns it. Only the owning service reads or writes a table.

use std::collections::BTreeMap;

use ruma::canonical_json::CanonicalJsonObject;
use ruma::{OwnedEventId, OwnedRoomId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::Table;

/// Every column family, created when the database opens.
pub const ALL: &[&str] = &[
    META.name(),
    USERS.name(),
    ACCESS_TOKENS.name(),
    DEVICES.name(),
    REFRESH_TOKENS.name(),
    LOGIN_TOKENS.name(),
    LINKED_SESSIONS.name(),
    PROFILES.name(),
    ACCOUNT_DATA.name(),
    FILTERS.name(),
    REGISTRATION_TOKENS.name(),
    DEVICE_KEYS.name(),
    ONE_TIME_KEYS.name(),
    FALLBACK_KEYS.name(),
    CROSS_SIGNING_KEYS.name(),
    DEVICE_LIST_CHANGES.name(),
    TO_DEVICE_MESSAGES.name(),
    TO_DEVICE_TXNS.name(),
    BACKUP_VERSIONS.name(),
    BACKUP_KEYS.name(),
    DEHYDRATED_DEVICES.name(),
    ACCOUNT_DATA_CHANGES.name(),
    ROOMS.name(),
    PDUS.name(),
    TIMELINE.name(),
    STATE_GROUPS.name(),
    MEMBERSHIPS.name(),
    ROOM_MEMBERS.name(),
    ALIASES.name(),
    TRANSACTIONS.name(),
    RELATIONS.name(),
    RECEIPTS.name(),
    PUBLISHED_ROOMS.name(),
    LOGIN_ATTEMPTS.name(),
    AUDIT_LOG.name(),
    MEDIA.name(),
    MEDIA_PENDING.name(),
    MEDIA_THUMBNAILS.name(),
    DIRECTORY_PROFILES.name(),
    EVENT_POSITIONS.name(),
    APPSERVICE_QUEUES.name(),
    THREEPIDS.name(),
    USER_THREEPIDS.name(),
    EMAIL_VALIDATIONS.name(),
    EMAIL_VALIDATION_SECRETS.name(),
    INVITATIONS.name(),
    DELETION_REQUESTS.name(),
];

/// Database-wide values such as the schema version. Owner: storage.
pub const META: Table<String, Value> = Table::new("meta");

/// Accounts by full user ID. Owner: `service::accounts`.
pub const USERS: Table<String, UserRecord> = Table::new("users");

/// Access tokens by the SHA-256 of the token; the token itself is never stored.
/// Owner: `service::accounts`.
pub const ACCESS_TOKENS: Table<Vec<u8>, AccessTokenRecord> = Table::new("access_tokens");

/// Devices by (user ID, device ID). Owner: `service::accounts`.
pub const DEVICES: Table<(String, String), DeviceRecord> = Table::new("devices");

/// Refresh tokens by the SHA-256 of the token; the token itself is never stored.
/// Owner: `service::accounts`.
pub const REFRESH_TOKENS: Table<Vec<u8>, RefreshTokenRecord> = Table::new("refresh_tokens");

/// Single-use login tokens from `POST /login/get_token` by the SHA-256 of the token.
/// Owner: `service::accounts`.
pub const LOGIN_TOKENS: Table<Vec<u8>, LoginTokenRecord> = Table::new("login_tokens");

/// Sessions linked with a login token, by (user ID, device ID); the value is when the session
/// ends, in milliseconds since the Unix epoch. The expiry sweep scans this table.
/// Owner: `service::accounts`.
pub const LINKED_SESSIONS: Table<(String, String), u64> = Table::new("linked_sessions");

/// Profiles by user ID. Owner: `service::profiles`.
pub const PROFILES: Table<String, ProfileRecord> = Table::new("profiles");

/// Account data by (user ID, room ID or empty for global data, event type); the value is the
/// event content as the client sent it. Owner: `service::account_data`.
pub const ACCOUNT_DATA: Table<(String, String, String), Box<RawValue>> = Table::new("account_data");

/// Stored filters by (user ID, filter ID). Owner: `service::filters`.
pub const FILTERS: Table<(String, String), Box<RawValue>> = Table::new("filters");

/// Registration tokens by the token. Owner: `service::registration_tokens`.
pub const REGISTRATION_TOKENS: Table<String, RegistrationTokenRecord> =
    Table::new("registration_tokens");

/// Media by media ID: who created it and, once uploaded, what it contains.
/// Owner: `service::media`.
pub const MEDIA: Table<String, MediaRecord> = Table::new("media");

/// Media IDs reserved with `POST /_matrix/media/v1/create` whose content has not arrived, by
/// (user ID, media ID). The value is the expiry in milliseconds since the Unix epoch.
/// Owner: `service::media`.
pub const MEDIA_PENDING: Table<(String, String), u64> = Table::new("media_pending");

/// Generated thumbnails by (media ID, size key such as `320x240-scale`).
/// Owner: `service::media`.
pub const MEDIA_THUMBNAILS: Table<(String, String), ThumbnailRecord> =
    Table::new("media_thumbnails");
/// Device identity keys by (user ID, device ID): the signed object the device uploaded, plus
/// signatures added later, such as the one from the user's self-signing key.
/// Owner: `service::keys`.
pub const DEVICE_KEYS: Table<(String, String), JsonObject> = Table::new("device_keys");

/// Unclaimed one-time keys by (user ID, device ID, `<algorithm>:<key ID>`).
/// Owner: `service::keys`.
pub const ONE_TIME_KEYS: Table<(String, String, String), OneTimeKeyRecord> =
    Table::new("one_time_keys");

/// Fallback keys by (user ID, device ID, algorithm), at most one per algorithm.
/// Owner: `service::keys`.
pub const FALLBACK_KEYS: Table<(String, String, String), FallbackKeyRecord> =
    Table::new("fallback_keys");

/// Cross-signing keys by (user ID, usage: `master`, `self_signing` or `user_signing`): the signed
/// object as uploaded, plus signatures added later. Owner: `service::keys`.
pub const CROSS_SIGNING_KEYS: Table<(String, String), JsonObject> =
    Table::new("cross_signing_keys");

/// Device-list changes by stream position; the value is the user whose devices or
/// cross-signing keys changed. Owner: `service::keys`.
pub const DEVICE_LIST_CHANGES: Table<u64, String> = Table::new("device_list_changes");

/// To-device messages not yet acknowledged, by (recipient user ID, recipient device ID, stream
/// position). Owner: `service::to_device`.
pub const TO_DEVICE_MESSAGES: Table<(String, String, u64), ToDeviceRecord> =
    Table::new("to_device_messages");

/// Transaction IDs of applied `sendToDevice` requests by (sender user ID, sender device ID,
/// txn_id); the value is when the request was applied, in milliseconds since the Unix epoch.
/// Owner: `service::to_device`.
pub const TO_DEVICE_TXNS: Table<(String, String, String), u64> = Table::new("to_device_txns");

/// Key backup versions by (user ID, version). Deleted versions stay as tombstones so that their
/// numbers are never reused. Owner: `service::key_backup`.
pub const BACKUP_VERSIONS: Table<(String, String), BackupVersionRecord> =
    Table::new("backup_versions");

/// Backed-up room keys by (user ID, version, room ID, session ID); the value is the
/// `KeyBackupData` object as uploaded. Owner: `service::key_backup`.
pub const BACKUP_KEYS: Table<(String, String, String, String), JsonObject> =
    Table::new("backup_keys");

/// Each user's dehydrated device (MSC3814), by user ID. Owner: `service::dehydrated_device`.
pub const DEHYDRATED_DEVICES: Table<String, DehydratedDeviceRecord> =
    Table::new("dehydrated_devices");

/// A JSON object as a client sent it, kept whole so that signatures over it stay valid.
pub type JsonObject = serde_json::Map<String, Value>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// Argon2id hash in PHC string format; `None` for accounts that cannot log in by password.
    pub password_hash: Option<String>,
    pub created_ts: u64,
    #[serde(default)]
    pub deactivated: bool,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessTokenRecord {
    pub user_id: String,
    pub device_id: String,
    pub created_ts: u64,
    /// When the token expires (a soft logout: the client may refresh), in milliseconds since
    /// the Unix epoch; `None` for tokens issued without a refresh token.
    #[serde(default)]
    pub expires_ts: Option<u64>,
    /// When the device's session ends for good (linked sessions), in milliseconds since the
    /// Unix epoch.
    #[serde(default)]
    pub session_ends_ts: Option<u64>,
    /// The hash of the refresh token this token replaced, revoked when this token is first
    /// used.
    #[serde(default)]
    pub replaces_refresh_token_hash: Option<Vec<u8>>,
}

/// The way a device signed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Signed in with a password or at registration. Devices stored before session kinds
    /// existed read as primary.
    #[default]
    Primary,
    /// Linked from a primary device with a login token; the session ends after a fixed time.
    Linked,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub display_name: Option<String>,
    pub created_ts: u64,
    /// Hash of the device's current access token, so deleting the device revokes it.
    pub access_token_hash: Option<Vec<u8>>,
    pub last_seen_ts: Option<u64>,
    pub last_seen_ip: Option<String>,
    #[serde(default)]
    pub kind: DeviceKind,
    /// When a linked session ends, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub session_ends_ts: Option<u64>,
    /// Hash of the device's current refresh token.
    #[serde(default)]
    pub refresh_token_hash: Option<Vec<u8>>,
    /// Hash of the refresh token used for the last refresh. It stays valid until the new
    /// access or refresh token is used, so a client that lost the refresh response can retry.
    #[serde(default)]
    pub previous_refresh_token_hash: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshTokenRecord {
    pub user_id: String,
    pub device_id: String,
    pub created_ts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginTokenRecord {
    pub user_id: String,
    /// The device that requested the token, for the audit log.
    pub issued_by_device_id: String,
    pub created_ts: u64,
    /// Milliseconds since the Unix epoch after which the token is rejected.
    pub expires_ts: u64,
}

/// A profile: display name, avatar and extensible fields with namespaced keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// Every field, including `displayname` and `avatar_url`, by key.
    pub fields: BTreeMap<String, Value>,
}

/// Third-party identifiers of accounts by (medium, address), so an address belongs to one
/// account at most. Email addresses are stored in lower case. Owner: `service::threepids`.
pub const THREEPIDS: Table<(String, String), ThreepidRecord> = Table::new("threepids");

/// The same identifiers by (user ID, medium, address), for listing an account's identifiers.
/// Owner: `service::threepids`.
pub const USER_THREEPIDS: Table<(String, String, String), ThreepidRecord> =
    Table::new("user_threepids");

/// Email validation sessions by session ID (`sid`). Owner: `service::threepids`.
pub const EMAIL_VALIDATIONS: Table<String, EmailValidationRecord> = Table::new("email_validations");

/// Session IDs by (SHA-256 of the client secret, purpose, address), so that a repeated
/// `requestToken` finds its session. Owner: `service::threepids`.
pub const EMAIL_VALIDATION_SECRETS: Table<(String, String, String), String> =
    Table::new("email_validation_secrets");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreepidRecord {
    pub user_id: String,
    /// Milliseconds since the Unix epoch when the address was validated.
    pub validated_at: u64,
    /// Milliseconds since the Unix epoch when the address was added to the account.
    pub added_at: u64,
}

/// The use of an email validation session. Each `requestToken` endpoint starts sessions for one
/// purpose only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailPurpose {
    Register,
    AddThreepid,
    ResetPassword,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmailValidationRecord {
    pub purpose: EmailPurpose,
    /// The address in lower case.
    pub address: String,
    /// SHA-256 of the client secret, hex-encoded.
    pub client_secret_hash: String,
    /// SHA-256 of the session ID and the emailed code, hex-encoded; the code is never stored.
    pub code_hash: String,
    /// The highest `send_attempt` a mail was sent for.
    pub send_attempt: u64,
    /// Milliseconds since the Unix epoch when the current code was sent.
    pub sent_ts: u64,
    /// Wrong codes submitted for the current code.
    pub failed_attempts: u32,
    /// Milliseconds since the Unix epoch when the code was submitted correctly.
    pub validated_ts: Option<u64>,
    /// The URL that a browser opening the emailed link is redirected to after validation.
    pub next_link: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrationTokenRecord {
    /// How many registrations the token allows; `None` for unlimited.
    pub uses_allowed: Option<u64>,
    /// How many registrations completed with it.
    pub completed: u64,
    /// Milliseconds since the Unix epoch after which the token is invalid.
    pub expiry_ts: Option<u64>,
    pub created_ts: u64,
    #[serde(default)]
    pub revoked: bool,
}

/// Account data changes by (user ID, stream position), for incremental `/sync`; the value is
/// (room ID or empty, event type). Owner: `service::account_data`.
pub const ACCOUNT_DATA_CHANGES: Table<(String, u64), (String, String)> =
    Table::new("account_data_changes");

/// Rooms by room ID: version, latest event and current state. Owner: `service::rooms`.
pub const ROOMS: Table<String, RoomRecord> = Table::new("rooms");

/// Every PDU by event ID. Owner: `service::rooms`.
pub const PDUS: Table<String, PduRecord> = Table::new("pdus");

/// A room's timeline: (room ID, stream position) to event ID. Owner: `service::rooms`.
pub const TIMELINE: Table<(String, u64), String> = Table::new("timeline");

/// Room state snapshots by state group: event type to state key to event ID. A group is
/// created by each state event, numbered with that event's stream position.
/// Owner: `service::rooms`.
pub const STATE_GROUPS: Table<u64, StateMap> = Table::new("state_groups");

/// Each user's rooms: (user ID, room ID) to their latest membership. Owner: `service::rooms`.
pub const MEMBERSHIPS: Table<(String, String), MembershipRecord> = Table::new("memberships");

/// Each room's members: (room ID, user ID) to their latest membership. Owner: `service::rooms`.
pub const ROOM_MEMBERS: Table<(String, String), MembershipRecord> = Table::new("room_members");

/// Room aliases by alias. Owner: `service::rooms`.
pub const ALIASES: Table<String, AliasRecord> = Table::new("aliases");

/// Client transaction IDs by (user ID, device ID, transaction ID) to the event ID they created,
/// so a retried send returns the same event. Owner: `service::rooms`.
pub const TRANSACTIONS: Table<(String, String, String), String> = Table::new("transactions");

/// Every PDU by stream position to its event ID, across rooms, so readers such as application
/// service delivery can follow new events in order. Owner: `service::rooms`.
pub const EVENT_POSITIONS: Table<u64, String> = Table::new("event_positions");

/// Relations by (parent event ID, child stream position) to the child. Owner: `service::rooms`.
pub const RELATIONS: Table<(String, u64), RelationRecord> = Table::new("relations");

/// Read receipts by (room ID, user ID, receipt type and thread). Owner: `service::receipts`.
pub const RECEIPTS: Table<(String, String, String), ReceiptRecord> = Table::new("receipts");

/// Rooms listed in the public room directory. Owner: `service::rooms`.
pub const PUBLISHED_ROOMS: Table<String, bool> = Table::new("published_rooms");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRecord {
    pub room_version: String,
    pub latest_event_id: String,
    pub depth: u64,
    pub current_state_group: u64,
    pub created_ts: u64,
}

/// Event type to state key to event ID.
pub type StateMap = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipRecord {
    pub membership: String,
    pub event_id: String,
    pub position: u64,
    /// Set by `/forget`: the room no longer appears for this user.
    #[serde(default)]
    pub forgotten: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: String,
    pub creator: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelationRecord {
    pub event_id: String,
    pub rel_type: String,
    pub event_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub event_id: String,
    pub receipt_type: String,
    pub thread_id: Option<String>,
    pub ts: u64,
    pub position: u64,
}

/// A PDU as stored: the signed event in canonical JSON plus where it sits in the stream and in
/// the room's state history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PduRecord {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    /// The event as signed (after redaction, if it was redacted).
    pub pdu: CanonicalJsonObject,
    /// The event's stream position, which orders the room's timeline.
    pub position: u64,
    /// The state group before this event.
    pub state_before: u64,
    /// The state group after this event (equal to `state_before` for non-state events).
    pub state_after: u64,
    /// The redaction event that redacted this one, if any.
    #[serde(default)]
    pub redacted_by: Option<OwnedEventId>,
    /// The device and transaction ID the sender used, echoed to that device only.
    #[serde(default)]
    pub transaction: Option<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The user ID of the uploader, who alone may upload to a reserved media ID.
    pub uploader: String,
    pub created_ts: u64,
    /// When a reserved media ID lapses unless its content is uploaded; `None` once the content
    /// is there.
    pub unused_expires_ts: Option<u64>,
    /// The uploaded file; `None` while the media ID is only reserved.
    pub content: Option<MediaContent>,
}

/// An uploaded file. The bytes live in the media store under `sha256`, so identical uploads
/// share one blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaContent {
    pub content_type: String,
    pub file_name: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes, which names the blob.
    pub sha256: String,
    pub uploaded_ts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThumbnailRecord {
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the thumbnail, which names its blob in the media store.
    pub sha256: String,
    pub created_ts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OneTimeKeyRecord {
    /// Orders keys by upload: keys are claimed lowest first, as the spec requires.
    pub upload_seq: u64,
    /// The key object (or string) as uploaded.
    pub key: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FallbackKeyRecord {
    /// The full key ID, `<algorithm>:<key ID>`.
    pub key_id: String,
    pub key: Value,
    /// Whether the key was handed out by a claim since it was uploaded.
    pub used: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToDeviceRecord {
    pub sender: String,
    pub event_type: String,
    pub content: Box<RawValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupVersionRecord {
    /// The `algorithm` and `auth_data` fields as the client sent them.
    pub algorithm: JsonObject,
    /// How many session keys the version holds.
    pub count: u64,
    /// Changes whenever the stored keys change, so clients can tell their copy is stale.
    pub etag: u64,
    pub created_ts: u64,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DehydratedDeviceRecord {
    pub device_id: String,
    /// The device's private keys, encrypted by the client; the server only stores them.
    pub device_data: Box<RawValue>,
}

/// Failed password attempts and lockouts by user ID. Owner: `service::security`.
pub const LOGIN_ATTEMPTS: Table<String, LoginAttemptsRecord> = Table::new("login_attempts");

/// Security events by sequence number (milliseconds since the Unix epoch shifted left by 16
/// bits, plus a counter), so they sort by time. Owner: `service::security`.
pub const AUDIT_LOG: Table<u64, AuditRecord> = Table::new("audit_log");

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoginAttemptsRecord {
    /// Wrong passwords since the last successful login or the last lockout.
    pub failures: u32,
    /// Lockouts since the last successful login.
    pub lockouts: u32,
    /// Milliseconds since the Unix epoch until which the account is locked.
    pub locked_until_ts: u64,
}

/// One security event. It never contains passwords, tokens or message content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord {
    pub ts: u64,
    /// The event kind, such as `login`, `login_failed` or `account_locked`.
    pub kind: String,
    pub user_id: Option<String>,
    pub device_id: Option<String>,
    /// The client's IP address, where the event came from a request.
    pub address: Option<String>,
    /// Further facts, such as the lockout duration or the admin command's name.
    #[serde(default)]
    pub detail: Value,
}

/// Verification level, its evidence and directory attributes by user ID; a user without a
/// record is `pending`. Owner: `service::directory`.
pub const DIRECTORY_PROFILES: Table<String, DirectoryProfileRecord> =
    Table::new("directory_profiles");

/// What the directory knows about one user besides the profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryProfileRecord {
    pub level: caduceus_directory::VerificationLevel,
    #[serde(default)]
    pub professions: Vec<String>,
    #[serde(default)]
    pub specialties: Vec<String>,
    #[serde(default)]
    pub organisations: Vec<String>,
    #[serde(default)]
    pub areas: Vec<caduceus_directory::Area>,
    /// False when the user opted out of the directory. Pending users are never listed,
    /// whatever this flag says.
    pub listed: bool,
    pub updated_ts: u64,
    /// The evidence that established the level; `None` for pending users and for records written
    /// before evidence was stored.
    #[serde(default)]
    pub evidence: Option<VerificationEvidence>,
}

/// The proof behind a verification level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationEvidence {
    pub source: EvidenceSource,
    /// The professional register, such as BIG, RPPS or GMC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_number: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub verified_at: u64,
    /// When the level should be checked again, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The source of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSource {
    /// A registration number matched against a professional register.
    Register,
    /// An HR or roster import by hospital IT.
    Roster,
    /// A verified email address at a trusted organisation domain.
    EmailDomain,
    /// An officer's approval.
    Officer,
}

impl EvidenceSource {
    pub const ALL: [EvidenceSource; 4] =
        [Self::Register, Self::Roster, Self::EmailDomain, Self::Officer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Roster => "roster",
            Self::EmailDomain => "email_domain",
            Self::Officer => "officer",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|source| source.as_str() == value)
    }
}

/// Delivery state per application service ID: how far the stream has been delivered and the
/// transaction being sent. Owner: `service::appservices`.
pub const APPSERVICE_QUEUES: Table<String, AppserviceQueueRecord> = Table::new("appservice_queues");

/// How far events have reached one application service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppserviceQueueRecord {
    /// Every event at or below this stream position was delivered or was of no interest.
    pub delivered_up_to: u64,
    /// The number of the next transaction; never reused, so transaction IDs stay unique.
    pub next_txn: u64,
    /// The transaction being sent, fixed before the first attempt so that every retry carries
    /// the same ID and the same events.
    pub in_flight: Option<PendingTransaction>,
}

/// A transaction that has not been acknowledged yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingTransaction {
    pub txn_id: String,
    /// The stream position the transaction covers up to; it becomes `delivered_up_to` once sent.
    pub up_to: u64,
    pub event_ids: Vec<String>,
    /// Typing notifications and receipts for a service with `receive_ephemeral`, as sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ephemeral: Vec<serde_json::Value>,
}

/// Invitations by the registration token they carry. Owner: `service::invitations`.
pub const INVITATIONS: Table<String, InvitationRecord> = Table::new("invitations");

/// An invitation from a verified member to a colleague's email address. Its registration token
/// lives in `registration_tokens`, single-use and expiring with the invitation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvitationRecord {
    /// The user ID of the member who sent it.
    pub inviter: String,
    /// The email address the invitation was sent to.
    pub email: String,
    pub created_ts: u64,
    /// Milliseconds since the Unix epoch after which the token no longer registers anyone.
    pub expiry_ts: u64,
    /// The account registered with it, once one is.
    #[serde(default)]
    pub accepted_by: Option<String>,
}

/// Account deletion requests by user ID, at most one per user: the open one, or the last
/// decision. Owner: `service::deletion_requests`.
pub const DELETION_REQUESTS: Table<String, DeletionRequestRecord> = Table::new("deletion_requests");

/// A user's request to have their account deleted, and the administrator's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletionRequestRecord {
    pub state: DeletionState,
    /// The user's reason, if they gave one; erased with the account on approval.
    #[serde(default)]
    pub reason: Option<String>,
    pub requested_ts: u64,
    /// When an administrator approved or rejected it, or the user withdrew it.
    #[serde(default)]
    pub decided_ts: Option<u64>,
    /// The administrator's reason for a rejection.
    #[serde(default)]
    pub decision_reason: Option<String>,
}

/// The state of a deletion request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionState {
    /// Waiting for an administrator.
    Pending,
    /// Approved: the account is deactivated and its personal data erased.
    Approved,
    Rejected,
    /// Withdrawn by the user before a decision.
    Withdrawn,
}

impl DeletionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Withdrawn => "withdrawn",
        }
    }
}
