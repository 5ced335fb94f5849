use std::collections::{BTreeMap, BTreeSet};

use ruma::api::client::keys::upload_signatures::v3::SignedKeys;
use ruma::encryption::OneTimeKey;
use ruma::{OneTimeKeyAlgorithm, OwnedOneTimeKeyId, UInt};
use serde_json::{json, Value};

use super::signed_json::test_support::SigningKey;
use super::*;
use crate::service::test_support::{assert_error, server, TestServer};

type OneTimeKeys = BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>;

fn raw<T>(value: Value) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(&value).unwrap())
}

/// A device with a real ed25519 identity key.
struct TestDevice {
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
    key: SigningKey,
    curve25519: String,
}

impl TestDevice {
    fn new(user_id: &OwnedUserId, device_id: &str) -> Self {
        Self {
            user_id: user_id.clone(),
            device_id: device_id.into(),
            key: SigningKey::named(device_id),
            curve25519: SigningKey::named("curve").public_key(),
        }
    }

    fn device_keys(&self) -> Value {
        let unsigned = json!({
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", self.device_id): self.curve25519,
                format!("ed25519:{}", self.device_id): self.key.public_key(),
            },
        });
        self.key.sign(self.user_id.as_str(), unsigned)
    }

    fn signed_key(&self, fallback: bool) -> Value {
        let mut key = json!({ "key": SigningKey::named("curve").public_key() });
        if fallback {
            key["fallback"] = json!(true);
        }
        self.key.sign(self.user_id.as_str(), key)
    }

    fn one_time_keys(&self, ids: &[&str]) -> OneTimeKeys {
        ids.iter()
            .map(|id| {
                let key_id =
                    OwnedOneTimeKeyId::try_from(format!("signed_curve25519:{id}")).unwrap();
                (key_id, raw(self.signed_key(false)))
            })
            .collect()
    }

    fn fallback_key(&self, id: &str) -> OneTimeKeys {
        let key_id = OwnedOneTimeKeyId::try_from(format!("signed_curve25519:{id}")).unwrap();
        BTreeMap::from([(key_id, raw(self.signed_key(true)))])
    }

    /// Uploads the device keys, one-time keys with these IDs and optionally a fallback key.
    fn upload(
        &self,
        keys: &Keys,
        one_time_ids: &[&str],
        fallback_id: Option<&str>,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
        let fallback = fallback_id.map(|id| self.fallback_key(id)).unwrap_or_default();
        keys.upload(
            &self.user_id,
            &self.device_id,
            Some(&raw(self.device_keys())),
            &self.one_time_keys(one_time_ids),
            &fallback,
        )
    }
}

fn signed_curve25519_count(counts: &BTreeMap<OneTimeKeyAlgorithm, UInt>) -> u64 {
    counts.get(&OneTimeKeyAlgorithm::SignedCurve25519).map_or(0, |count| u64::from(*count))
}

fn claim_request(user_id: &OwnedUserId, device_id: &OwnedDeviceId) -> ClaimRequest {
    BTreeMap::from([(
        user_id.clone(),
        BTreeMap::from([(device_id.clone(), OneTimeKeyAlgorithm::SignedCurve25519)]),
    )])
}

/// Claims one key of the device and returns its full key ID, if any was handed out.
fn claim_one(keys: &Keys, user_id: &OwnedUserId, device_id: &OwnedDeviceId) -> Option<String> {
    let claimed = keys.claim(&claim_request(user_id, device_id)).unwrap();
    let by_device = claimed.one_time_keys.get(user_id)?.get(device_id)?;
    assert_eq!(by_device.len(), 1, "a claim hands out one key per device");
    by_device.keys().next().map(|key_id| key_id.to_string())
}

fn stored_device_ids(
    server: &TestServer,
    requester: &OwnedUserId,
    user_id: &OwnedUserId,
) -> Vec<String> {
    let requested = BTreeMap::from([(user_id.clone(), Vec::new())]);
    let result =
        server.services.keys.query(&server.services.accounts, requester, &requested).unwrap();
    result
        .device_keys
        .get(user_id)
        .map(|devices| devices.keys().map(|device_id| device_id.to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn upload_counts_keys_and_query_returns_them() {
    let server = server();
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &[]).await;
    let device = TestDevice::new(&alice, "PHONE");

    let counts = device.upload(&server.services.keys, &["A1", "A2", "A3"], Some("F1")).unwrap();
    assert_eq!(signed_curve25519_count(&counts), 3);
    assert_eq!(
        server.services.keys.unused_fallback_key_types(&alice, &device.device_id).unwrap(),
        [OneTimeKeyAlgorithm::SignedCurve25519]
    );

    let requested = BTreeMap::from([(alice.clone(), Vec::new())]);
    let result = server.services.keys.query(&server.services.accounts, &bob, &requested).unwrap();
    let returned: Value = result.device_keys[&alice][&device.device_id].deserialize_as().unwrap();
    assert_eq!(returned["keys"], device.device_keys()["keys"]);
    assert_eq!(returned["signatures"], device.device_keys()["signatures"]);
    assert_eq!(returned["unsigned"]["device_display_name"], "PHONE phone");
}

#[tokio::test]
async fn counts_report_zero_signed_curve25519() {
    let server = server();
    let alice = server.user("alice", &["PHONE"]).await;
    let counts = server.services.keys.one_time_key_counts(&alice, "PHONE".into()).unwrap();
    assert_eq!(counts.get(&OneTimeKeyAlgorithm::SignedCurve25519), Some(&UInt::MIN));
}

#[tokio::test]
async fn claim_falls_back_when_one_time_keys_run_out() {
    let server = server();
    let alice = server.user("alice", &["PHONE"]).await;
    let device = TestDevice::new(&alice, "PHONE");
    device.upload(&server.services.keys, &["A1", "A2"], Some("F1")).unwrap();
    let keys = &server.services.keys;

    let first = claim_one(keys, &alice, &device.device_id).unwrap();
    let second = claim_one(keys, &alice, &device.device_id).unwrap();
    assert_ne!(first, second);
    assert_eq!(
        BTreeSet::from([first, second]),
        BTreeSet::from(["signed_curve25519:A1".to_owned(), "signed_curve25519:A2".to_owned()])
    );
    assert_eq!(
        signed_curve25519_count(&keys.one_time_key_counts(&alice, &device.device_id).unwrap()),
        0
    );

    assert_eq!(claim_one(keys, &alice, &device.device_id).unwrap(), "signed_curve25519:F1");
    assert!(
        keys.unused_fallback_key_types(&alice, &device.device_id).unwrap().is_empty(),
        "a handed-out fallback key is marked used"
    );
    // The fallback key keeps being handed out until the device replaces it.
    assert_eq!(claim_one(keys, &alice, &device.device_id).unwrap(), "signed_curve25519:F1");

    device.upload(keys, &[], Some("F2")).unwrap();
    assert_eq!(
        keys.unused_fallback_key_types(&alice, &device.device_id).unwrap(),
        [OneTimeKeyAlgorithm::SignedCurve25519]
    );
    assert_eq!(claim_one(keys, &alice, &device.device_id).unwrap(), "signed_curve25519:F2");
}

#[tokio::test]
async fn claim_without_keys_leaves_device_out() {
    let server = server();
    let alice = server.user("alice", &["PHONE"]).await;
    assert_eq!(claim_one(&server.services.keys, &alice, &"PHONE".into()), None);
}

#[tokio::test]
async fn claim_hands_out_oldest_upload_first() {
    let server = server();
    let alice = server.user("alice", &["PHONE"]).await;
    let device = TestDevice::new(&alice, "PHONE");
    let keys = &server.services.keys;
    // Key IDs sort the other way round from their upload order.
    device.upload(keys, &["ZZ"], None).unwrap();
    device.upload(keys, &["AA"], None).unwrap();

    assert_eq!(claim_one(keys, &alice, &device.device_id).unwrap(), "signed_curve25519:ZZ");
    assert_eq!(claim_one(keys, &alice, &device.device_id).unwrap(), "signed_curve25519:AA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_hand_out_each_key_once() {
    let server = server();
    let alice = server.user("alice", &["PHONE"]).await;
    let device = TestDevice::new(&alice, "PHONE");
    let ids: Vec<String> = (0..20).map(|index| format!("K{index:02}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    device.upload(&server.services.keys, &id_refs, Some("FALLBACK")).unwrap();

    let keys = server.services.keys.clone();
    let claims: Vec<_> = (0..50)
        .map(|_| {
            let keys = keys.clone();
            let user_id = alice.clone();
            let device_id = device.device_id.clone();
            tokio::task::spawn_blocking(move || claim_one(&keys, &user_id, &device_id))
        })
        .collect();
    let mut handed_out = Vec::new();
    for claim in claims {
        handed_out.push(claim.await.unwrap().expect("every claim gets a key"));
    }

    let fallback_count = handed_out.iter().filter(|key_id| key_id.ends_with(":FALLBACK")).count();
    let one_time: Vec<&String> =
        handed_out.iter().filter(|key_id| !key_id.ends_with(":FALLBACK")).collect();
    let distinct: BTreeSet<&String> = one_time.iter().copied().collect();
    assert_eq!(one_time.len(), 20, "every one-time key is handed out");
    assert_eq!(distinct.len(), 20, "no one-time key is handed out twice");
    assert_eq!(fallback_count, 30);
}

#[tokio::test]
async fn bad_device_keys_are_rejected_and_nothing_is_stored() {
    let server = server();
    let alice = server.user("alice", &["PHONE", "LAPTOP"]).await;
    let bob = server.user("bob", &[]).await;
    let keys = &server.services.keys;
    let device = TestDevice::new(&alice, "PHONE");
    let one_time = device.one_time_keys(&["A1"]);

    let mut wrong_user = device.device_keys();
    wrong_user["user_id"] = json!(bob);
    let mut wrong_device = TestDevice::new(&alice, "LAPTOP").device_keys();
    wrong_device["device_id"] = json!("LAPTOP");
    let mut tampered = device.device_keys();
    tampered["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    let signed_by_other_key = {
        let mut keys = device.device_keys();
        keys.as_object_mut().unwrap().remove("signatures");
        SigningKey::named("PHONE").sign(alice.as_str(), keys)
    };
    let mut missing_ed25519 = device.device_keys();
    missing_ed25519["keys"].as_object_mut().unwrap().remove("ed25519:PHONE");
    let mut malformed = device.device_keys();
    malformed["algorithms"] = json!("m.megolm.v1.aes-sha2");

    let cases = [
        ("another user's ID", wrong_user, ErrorCode::InvalidParam),
        ("another device's ID", wrong_device, ErrorCode::InvalidParam),
        ("content changed after signing", tampered, ErrorCode::InvalidSignature),
        ("signed by another key", signed_by_other_key, ErrorCode::InvalidSignature),
        ("no ed25519 key", missing_ed25519, ErrorCode::InvalidParam),
        ("algorithms not a list", malformed, ErrorCode::BadJson),
        ("not an object", json!(["keys"]), ErrorCode::BadJson),
    ];
    for (case, device_keys, code) in cases {
        let result = keys.upload(
            &alice,
            &device.device_id,
            Some(&raw(device_keys)),
            &one_time,
            &BTreeMap::new(),
        );
        let message = assert_error(result, code.clone());
        assert!(!message.is_empty(), "{case}: the error explains itself");
        assert!(
            stored_device_ids(&server, &bob, &alice).is_empty(),
            "{case}: no device keys stored"
        );
        let counts = keys.one_time_key_counts(&alice, &device.device_id).unwrap();
        assert_eq!(signed_curve25519_count(&counts), 0, "{case}: no one-time key stored");
    }
}

#[tokio::test]
async fn new_identity_keys_for_known_device_are_rejected() {
    let server = server();
    let alice = server.user("alice", &["PHONE"]).await;
    let keys = &server.services.keys;
    let device = TestDevice::new(&alice, "PHONE");
    device.upload(keys, &[], None).unwrap();
    let before = stored_device_ids(&server, &alice, &alice);

    // The same keys again are fine, as clients retry uploads.
    device.upload(keys, &[], None).unwrap();

    let impostor = TestDevice::new(&alice, "PHONE");
    let result = impostor.upload(keys, &["A1"], None);
    assert_error(result, ErrorCode::InvalidParam);

    let requested = BTreeMap::from([(alice.clone(), Vec::new())]);
    let stored = keys.query(&server.services.accounts, &alice, &requested).unwrap();
    let stored: Value = stored.device_keys[&alice][&device.device_id].deserialize_as().unwrap();
    assert_eq!(stored["keys"], device.device_keys()["keys"], "the first identity keys stay");
    assert_eq!(stored_device_ids(&server, &alice, &alice), before);
    assert_eq!(
        signed_curve25519_count(&keys.one_time_key_counts(&alice, &device.device_id).unwrap()),
        0
    );
}

#[tokio::test]
async fn bad_one_time_keys_are_rejected_and_nothing_is_stored() {
    let server = server();
    let alice = server.user("alice", &["PHONE"]).await;
    let keys = &server.services.keys;
    let device = TestDevice::new(&alice, "PHONE");
    device.upload(keys, &[], None).unwrap();

    let key_id = |id: &str| OwnedOneTimeKeyId::try_from(id).unwrap();
    let forged = SigningKey::named("PHONE")
        .sign(alice.as_str(), json!({ "key": SigningKey::named("x").public_key() }));
    let cases: Vec<(&str, OneTimeKeys, ErrorCode)> = vec![
        (
            "signed by another key",
            BTreeMap::from([(key_id("signed_curve25519:B1"), raw(forged))]),
            ErrorCode::InvalidSignature,
        ),
        (
            "unsigned curve25519",
            BTreeMap::from([(
                key_id("curve25519:B2"),
                raw(json!(SigningKey::named("x").public_key())),
            )]),
            ErrorCode::InvalidParam,
        ),
        (
            "no key field",
            BTreeMap::from([(
                key_id("signed_curve25519:B3"),
                raw(device.key.sign(alice.as_str(), json!({ "other": 1 }))),
            )]),
            ErrorCode::BadJson,
        ),
    ];
    for (case, mut one_time, code) in cases {
        // One good key rides along and must not be stored either.
        one_time.extend(device.one_time_keys(&["GOOD"]));
        let result = keys.upload(&alice, &device.device_id, None, &one_time, &BTreeMap::new());
        assert_error(result, code);
        let counts = keys.one_time_key_counts(&alice, &device.device_id).unwrap();
        assert_eq!(signed_curve25519_count(&counts), 0, "{case}: nothing stored");
    }

    let mut two_fallbacks = device.fallback_key("F1");
    two_fallbacks.extend(device.fallback_key("F2"));
    let result = keys.upload(&alice, &device.device_id, None, &BTreeMap::new(), &two_fallbacks);
    assert_error(result, ErrorCode::InvalidParam);
    assert!(keys.unused_fallback_key_types(&alice, &device.device_id).unwrap().is_empty());
}

#[tokio::test]
async fn one_time_key_id_reused_with_other_value_is_rejected() {
    let server = server();
    let alice = server.user("alice", &["PHONE"]).await;
    let keys = &server.services.keys;
    let device = TestDevice::new(&alice, "PHONE");
    let first = device.one_time_keys(&["A1"]);
    keys.upload(
        &alice,
        &device.device_id,
        Some(&raw(device.device_keys())),
        &first,
        &BTreeMap::new(),
    )
    .unwrap();

    // A retry with the same key succeeds and stores nothing new.
    let counts = keys.upload(&alice, &device.device_id, None, &first, &BTreeMap::new()).unwrap();
    assert_eq!(signed_curve25519_count(&counts), 1);

    let other_value = device.one_time_keys(&["A1"]);
    let result = keys.upload(&alice, &device.device_id, None, &other_value, &BTreeMap::new());
    assert_error(result, ErrorCode::InvalidParam);
    assert_eq!(
        signed_curve25519_count(&keys.one_time_key_counts(&alice, &device.device_id).unwrap()),
        1
    );
}

#[tokio::test]
async fn device_list_changes_follow_devices_and_keys() {
    let server = server();
    let services = &server.services;
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &[]).await;
    server.shared_room(&alice, &[&bob]).await;

    let since = services.stream.visible();
    TestDevice::new(&alice, "PHONE").upload(&services.keys, &[], None).unwrap();
    let after_upload = services.stream.visible();
    let changes = services.keys.device_list_changes(&bob, since, after_upload).unwrap();
    assert_eq!(changes.changed, vec![alice.clone()]);
    assert!(changes.left.is_empty());

    // An upload without device keys changes no device list.
    services.keys.upload(&alice, "PHONE".into(), None, &BTreeMap::new(), &BTreeMap::new()).unwrap();
    assert_eq!(services.stream.visible(), after_upload);

    services.accounts.create_session(&bob, Some("TABLET".into()), None).unwrap();
    let after_login = services.stream.visible();
    let changes = services.keys.device_list_changes(&alice, after_upload, after_login).unwrap();
    assert_eq!(changes.changed, vec![bob.clone()], "a new device is a change");

    services.accounts.delete_devices(&alice, &["PHONE".to_owned()]).unwrap();
    let after_delete = services.stream.visible();
    let changes = services.keys.device_list_changes(&bob, after_login, after_delete).unwrap();
    assert_eq!(changes.changed, vec![alice.clone()], "a deleted device is a change");
    assert!(stored_device_ids(&server, &bob, &alice).is_empty(), "its keys are gone");
    assert_eq!(claim_one(&services.keys, &alice, &"PHONE".into()), None);

    let empty = services.keys.device_list_changes(&bob, after_delete, after_delete).unwrap();
    assert_eq!(empty, DeviceListChanges::default());
}

#[tokio::test]
async fn device_list_changes_follow_shared_rooms() {
    let server = server();
    let services = &server.services;
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &["PHONE"]).await;
    let carol = server.user("carol", &["PHONE"]).await;
    let room_id = server.shared_room(&alice, &[&bob]).await;

    let since = services.stream.visible();
    for user_id in [&alice, &bob, &carol] {
        TestDevice::new(user_id, "PHONE").upload(&services.keys, &[], None).unwrap();
    }
    let after_uploads = services.stream.visible();
    let changes = services.keys.device_list_changes(&alice, since, after_uploads).unwrap();
    assert_eq!(changes.changed, vec![alice.clone(), bob.clone()], "Carol shares no room");
    assert!(changes.left.is_empty());

    services.rooms.join(&room_id, &carol, &Default::default(), None).await.unwrap();
    let after_join = services.stream.visible();
    let changes = services.keys.device_list_changes(&alice, after_uploads, after_join).unwrap();
    assert_eq!(changes.changed, vec![carol.clone()], "a new room member's devices are news");
    let changes = services.keys.device_list_changes(&carol, after_uploads, after_join).unwrap();
    assert_eq!(changes.changed, vec![alice.clone(), bob.clone()], "so are the new room's members");

    services.rooms.leave(&room_id, &bob, None).await.unwrap();
    let after_leave = services.stream.visible();
    let changes = services.keys.device_list_changes(&alice, after_join, after_leave).unwrap();
    assert!(changes.changed.is_empty());
    assert_eq!(changes.left, vec![bob.clone()]);
    let changes = services.keys.device_list_changes(&bob, after_join, after_leave).unwrap();
    assert_eq!(changes.left, vec![alice.clone(), carol.clone()]);
}

/// A user's three cross-signing keys.
struct CrossSigning {
    master: SigningKey,
    self_signing: SigningKey,
    user_signing: SigningKey,
}

impl CrossSigning {
    fn new() -> Self {
        Self {
            master: SigningKey::self_named(),
            self_signing: SigningKey::self_named(),
            user_signing: SigningKey::self_named(),
        }
    }

    fn key_object(user_id: &UserId, usage: &str, key: &SigningKey) -> Value {
        json!({
            "user_id": user_id,
            "usage": [usage],
            "keys": { key.key_id(): key.public_key() },
        })
    }

    fn master_key(&self, user_id: &UserId) -> Value {
        Self::key_object(user_id, "master", &self.master)
    }

    fn self_signing_key(&self, user_id: &UserId) -> Value {
        self.master
            .sign(user_id.as_str(), Self::key_object(user_id, "self_signing", &self.self_signing))
    }

    fn user_signing_key(&self, user_id: &UserId) -> Value {
        self.master
            .sign(user_id.as_str(), Self::key_object(user_id, "user_signing", &self.user_signing))
    }

    fn upload(&self, keys: &Keys, user_id: &UserId) -> Result<()> {
        let (master, self_signing, user_signing) = self.raw(user_id);
        keys.upload_signing_keys(
            user_id,
            &SigningKeysUpload {
                master_key: Some(&master),
                self_signing_key: Some(&self_signing),
                user_signing_key: Some(&user_signing),
            },
        )
    }

    fn raw(
        &self,
        user_id: &UserId,
    ) -> (Raw<CrossSigningKey>, Raw<CrossSigningKey>, Raw<CrossSigningKey>) {
        (
            raw(self.master_key(user_id)),
            raw(self.self_signing_key(user_id)),
            raw(self.user_signing_key(user_id)),
        )
    }
}

#[tokio::test]
async fn cross_signing_upload_and_query() {
    let server = server();
    let keys = &server.services.keys;
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &[]).await;
    let cross_signing = CrossSigning::new();
    let (master, self_signing, user_signing) = cross_signing.raw(&alice);
    let upload = SigningKeysUpload {
        master_key: Some(&master),
        self_signing_key: Some(&self_signing),
        user_signing_key: Some(&user_signing),
    };

    assert!(
        !keys.signing_keys_need_auth(&alice, &upload).unwrap(),
        "the first upload needs no password"
    );
    keys.upload_signing_keys(&alice, &upload).unwrap();
    assert!(
        !keys.signing_keys_need_auth(&alice, &upload).unwrap(),
        "repeating the upload needs no password"
    );

    let other = CrossSigning::new();
    let (other_master, _, _) = other.raw(&alice);
    let replacement = SigningKeysUpload { master_key: Some(&other_master), ..Default::default() };
    assert!(
        keys.signing_keys_need_auth(&alice, &replacement).unwrap(),
        "replacing keys needs a password"
    );

    let requested = BTreeMap::from([(alice.clone(), Vec::new())]);
    let for_bob = keys.query(&server.services.accounts, &bob, &requested).unwrap();
    let master: Value = for_bob.master_keys[&alice].deserialize_as().unwrap();
    assert_eq!(master["keys"], cross_signing.master_key(&alice)["keys"]);
    assert!(for_bob.self_signing_keys.contains_key(&alice));
    assert!(for_bob.user_signing_keys.is_empty(), "only the owner sees the user-signing key");

    let for_alice = keys.query(&server.services.accounts, &alice, &requested).unwrap();
    assert!(for_alice.user_signing_keys.contains_key(&alice));
}

#[tokio::test]
async fn bad_cross_signing_keys_are_rejected_and_nothing_is_stored() {
    let server = server();
    let keys = &server.services.keys;
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &[]).await;
    let cross_signing = CrossSigning::new();
    let (master, _, user_signing) = cross_signing.raw(&alice);

    let unsigned_self_signing: Raw<CrossSigningKey> =
        raw(CrossSigning::key_object(&alice, "self_signing", &cross_signing.self_signing));
    let signed_by_other = raw(SigningKey::self_named().sign(
        alice.as_str(),
        CrossSigning::key_object(&alice, "self_signing", &cross_signing.self_signing),
    ));
    let wrong_usage: Raw<CrossSigningKey> =
        raw(CrossSigning::key_object(&alice, "self_signing", &cross_signing.master));
    let for_bob: Raw<CrossSigningKey> = raw(cross_signing.master_key(&bob));

    let cases: Vec<(&str, SigningKeysUpload<'_>, ErrorCode)> = vec![
        (
            "self-signing key without signature",
            SigningKeysUpload {
                master_key: Some(&master),
                self_signing_key: Some(&unsigned_self_signing),
                ..Default::default()
            },
            ErrorCode::InvalidSignature,
        ),
        (
            "self-signing key signed by another key",
            SigningKeysUpload {
                master_key: Some(&master),
                self_signing_key: Some(&signed_by_other),
                ..Default::default()
            },
            ErrorCode::InvalidSignature,
        ),
        (
            "user-signing key without any master key",
            SigningKeysUpload { user_signing_key: Some(&user_signing), ..Default::default() },
            ErrorCode::MissingParam,
        ),
        (
            "master key without master usage",
            SigningKeysUpload { master_key: Some(&wrong_usage), ..Default::default() },
            ErrorCode::InvalidParam,
        ),
        (
            "master key of another user",
            SigningKeysUpload { master_key: Some(&for_bob), ..Default::default() },
            ErrorCode::InvalidParam,
        ),
    ];
    let requested = BTreeMap::from([(alice.clone(), Vec::new())]);
    for (case, upload, code) in cases {
        let since = server.services.stream.visible();
        assert_error(keys.upload_signing_keys(&alice, &upload), code);
        let stored = keys.query(&server.services.accounts, &alice, &requested).unwrap();
        assert!(stored.master_keys.is_empty(), "{case}: no master key stored");
        assert!(stored.self_signing_keys.is_empty(), "{case}: no self-signing key stored");
        assert_eq!(server.services.stream.visible(), since, "{case}: no change recorded");
    }
}

#[tokio::test]
async fn signatures_upload_stores_valid_and_reports_invalid() {
    let server = server();
    let keys = &server.services.keys;
    let alice = server.user("alice", &["PHONE"]).await;
    let bob = server.user("bob", &["PHONE"]).await;
    let carol = server.user("carol", &[]).await;
    let alice_device = TestDevice::new(&alice, "PHONE");
    alice_device.upload(keys, &[], None).unwrap();
    let alice_signing = CrossSigning::new();
    alice_signing.upload(keys, &alice).unwrap();
    let bob_signing = CrossSigning::new();
    bob_signing.upload(keys, &bob).unwrap();

    // Alice's self-signing key signs her device; her user-signing key signs Bob's master key.
    let signed_device = alice_signing.self_signing.sign(alice.as_str(), alice_device.device_keys());
    let signed_bob = alice_signing.user_signing.sign(alice.as_str(), bob_signing.master_key(&bob));
    // A signature made by the wrong key under the self-signing key's ID does not verify.
    let mut forged_bob = bob_signing.master_key(&bob);
    let forged = SigningKey::self_named().sign(alice.as_str(), forged_bob.clone());
    let forged_signature =
        forged["signatures"][alice.as_str()].as_object().unwrap().values().next().unwrap().clone();
    forged_bob["signatures"] =
        json!({ alice.as_str(): { alice_signing.user_signing.key_id(): forged_signature } });

    let mut alice_keys = SignedKeys::new();
    alice_keys.add_device_keys("PHONE".into(), raw(signed_device));
    alice_keys.add_cross_signing_keys("UNKNOWN".into(), raw(json!({})));
    let mut bob_keys = SignedKeys::new();
    bob_keys.add_cross_signing_keys(bob_signing.master.public_key().into(), raw(signed_bob));
    let failures = keys
        .upload_signatures(
            &alice,
            &BTreeMap::from([(alice.clone(), alice_keys), (bob.clone(), bob_keys)]),
        )
        .unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[&alice]["UNKNOWN"].errcode, ErrorCode::NotFound);

    let requested = BTreeMap::from([(alice.clone(), Vec::new()), (bob.clone(), Vec::new())]);
    let for_carol = keys.query(&server.services.accounts, &carol, &requested).unwrap();
    let device: Value =
        for_carol.device_keys[&alice][&alice_device.device_id].deserialize_as().unwrap();
    assert!(
        device["signatures"][alice.as_str()][alice_signing.self_signing.key_id()].is_string(),
        "the self-signing signature is stored"
    );
    let bob_master: Value = for_carol.master_keys[&bob].deserialize_as().unwrap();
    assert!(
        bob_master["signatures"].get(alice.as_str()).is_none(),
        "Carol does not see Alice's signature"
    );
    let for_alice = keys.query(&server.services.accounts, &alice, &requested).unwrap();
    let bob_master: Value = for_alice.master_keys[&bob].deserialize_as().unwrap();
    assert!(
        bob_master["signatures"][alice.as_str()][alice_signing.user_signing.key_id()].is_string()
    );

    // The forged signature is reported and the stored key keeps the valid one only.
    let mut bob_keys = SignedKeys::new();
    bob_keys.add_cross_signing_keys(bob_signing.master.public_key().into(), raw(forged_bob));
    let since = server.services.stream.visible();
    let failures =
        keys.upload_signatures(&carol, &BTreeMap::from([(bob.clone(), bob_keys.clone())])).unwrap();
    assert_eq!(
        failures[&bob][&bob_signing.master.public_key()].errcode,
        ErrorCode::InvalidSignature,
        "Carol has no user-signing key"
    );
    let failures =
        keys.upload_signatures(&alice, &BTreeMap::from([(bob.clone(), bob_keys)])).unwrap();
    assert_eq!(
        failures[&bob][&bob_signing.master.public_key()].errcode,
        ErrorCode::InvalidSignature
    );
    assert_eq!(server.services.stream.visible(), since, "rejected signatures record no change");
    let for_alice = keys.query(&server.services.accounts, &alice, &requested).unwrap();
    let bob_master: Value = for_alice.master_keys[&bob].deserialize_as().unwrap();
    let expected = signed_bob_signature(&alice_signing, &bob_signing, &bob, &alice);
    assert_eq!(
        bob_master["signatures"][alice.as_str()][alice_signing.user_signing.key_id()],
        expected
    );
}

fn signed_bob_signature(
    alice_signing: &CrossSigning,
    bob_signing: &CrossSigning,
    bob: &UserId,
    alice: &UserId,
) -> Value {
    let signed = alice_signing.user_signing.sign(alice.as_str(), bob_signing.master_key(bob));
    signed["signatures"][alice.as_str()][alice_signing.user_signing.key_id()].clone()
}

#[tokio::test]
async fn device_signs_own_master_key() {
    let server = server();
    let keys = &server.services.keys;
    let alice = server.user("alice", &["PHONE"]).await;
    let device = TestDevice::new(&alice, "PHONE");
    device.upload(keys, &[], None).unwrap();
    let cross_signing = CrossSigning::new();
    cross_signing.upload(keys, &alice).unwrap();

    let master_id = cross_signing.master.public_key();
    let signed = device.key.sign(alice.as_str(), cross_signing.master_key(&alice));
    let mut own = SignedKeys::new();
    own.add_cross_signing_keys(master_id.clone().into(), raw(signed));
    let failures = keys.upload_signatures(&alice, &BTreeMap::from([(alice.clone(), own)])).unwrap();
    assert!(failures.is_empty(), "{failures:?}");

    let requested = BTreeMap::from([(alice.clone(), Vec::new())]);
    let stored = keys.query(&server.services.accounts, &alice, &requested).unwrap();
    let master: Value = stored.master_keys[&alice].deserialize_as().unwrap();
    assert!(master["signatures"][alice.as_str()]["ed25519:PHONE"].is_string());

    // A changed key is not signed, even with a valid signature over the changed content.
    let mut changed = cross_signing.master_key(&alice);
    changed["usage"] = json!(["master", "self_signing"]);
    let mut own = SignedKeys::new();
    own.add_cross_signing_keys(
        master_id.clone().into(),
        raw(device.key.sign(alice.as_str(), changed)),
    );
    let failures = keys.upload_signatures(&alice, &BTreeMap::from([(alice.clone(), own)])).unwrap();
    assert_eq!(failures[&alice][&master_id].errcode, ErrorCode::InvalidParam);
}

#[tokio::test]
async fn new_master_key_drops_old_subkeys() {
    let server = server();
    let keys = &server.services.keys;
    let alice = server.user("alice", &[]).await;
    CrossSigning::new().upload(keys, &alice).unwrap();

    let replacement = CrossSigning::new();
    let (master, _, _) = replacement.raw(&alice);
    keys.upload_signing_keys(
        &alice,
        &SigningKeysUpload { master_key: Some(&master), ..Default::default() },
    )
    .unwrap();

    let requested = BTreeMap::from([(alice.clone(), Vec::new())]);
    let stored = keys.query(&server.services.accounts, &alice, &requested).unwrap();
    let stored_master: Value = stored.master_keys[&alice].deserialize_as().unwrap();
    assert_eq!(stored_master["keys"], replacement.master_key(&alice)["keys"]);
    assert!(
        stored.self_signing_keys.is_empty(),
        "the old self-signing key was signed by the old master key"
    );
    assert!(stored.user_signing_keys.is_empty());
}

#[tokio::test]
async fn query_reports_other_servers_as_failures() {
    let server = server();
    let alice = server.user("alice", &[]).await;
    let remote = OwnedUserId::try_from("@dave:remote.example").unwrap();
    let requested = BTreeMap::from([(remote.clone(), Vec::new())]);
    let result = server.services.keys.query(&server.services.accounts, &alice, &requested).unwrap();
    assert!(result.failures.contains_key("remote.example"));
    assert!(result.device_keys.is_empty());

    let claimed = server.services.keys.claim(&claim_request(&remote, &"DEVICE".into())).unwrap();
    assert!(claimed.failures.contains_key("remote.example"));
    assert!(claimed.one_time_keys.is_empty());
}
