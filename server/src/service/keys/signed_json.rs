//! Signed JSON as end-to-end encryption uses it: canonical JSON, unpadded base64 and ed25519
//! signatures under `signatures.<user ID>.<key ID>`.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use ruma::signatures::{to_canonical_json_string_for_signing, verify_canonical_json_bytes};
use ruma::{CanonicalJsonValue, SigningKeyAlgorithm};
use serde_json::Value;

use crate::error::{Error, ErrorCode};
use crate::storage::tables::JsonObject;

/// Base64 as the spec writes keys and signatures: unpadded, though padded input is accepted.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The reason a signature check failed.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("the object has no signature by {key_id} of {signer}")]
    Missing { signer: String, key_id: String },
    #[error("the signature by {key_id} is not a base64 string")]
    Malformed { key_id: String },
    #[error("the object cannot be converted to canonical JSON: {0}")]
    NotCanonical(String),
    #[error("the signature by {key_id} does not verify")]
    Invalid { key_id: String },
}

impl From<SignatureError> for Error {
    fn from(error: SignatureError) -> Self {
        match error {
            SignatureError::NotCanonical(_) => Error::bad_json(error.to_string()),
            _ => Error::new(ErrorCode::InvalidSignature, error.to_string()),
        }
    }
}

/// Checks the signature `signatures[signer][key_id]` on `object` against the ed25519
/// `public_key` (unpadded base64). The signed bytes are the canonical JSON of the object without
/// `signatures` and `unsigned`.
pub fn verify(
    object: &JsonObject,
    signer: &str,
    key_id: &str,
    public_key: &str,
) -> Result<(), SignatureError> {
    let missing =
        || SignatureError::Missing { signer: signer.to_owned(), key_id: key_id.to_owned() };
    let signature = object
        .get("signatures")
        .and_then(|signatures| signatures.get(signer))
        .and_then(|by_signer| by_signer.get(key_id))
        .ok_or_else(missing)?;
    let signature = signature
        .as_str()
        .and_then(|signature| BASE64.decode(signature).ok())
        .ok_or_else(|| SignatureError::Malformed { key_id: key_id.to_owned() })?;
    let invalid = || SignatureError::Invalid { key_id: key_id.to_owned() };
    let public_key = BASE64.decode(public_key).map_err(|_| invalid())?;

    let canonical = canonical_for_signing(object)?;
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        &public_key,
        &signature,
        canonical.as_bytes(),
    )
    .map_err(|_| invalid())
}

/// The canonical JSON of `object` without `signatures` and `unsigned`: the bytes a signature
/// covers, and what two uploads of the same key must agree on.
pub fn canonical_for_signing(object: &JsonObject) -> Result<String, SignatureError> {
    let canonical = CanonicalJsonValue::try_from(Value::Object(object.clone()))
        .map_err(|error| SignatureError::NotCanonical(error.to_string()))?;
    let CanonicalJsonValue::Object(canonical) = canonical else {
        return Err(SignatureError::NotCanonical("not an object".to_owned()));
    };
    to_canonical_json_string_for_signing(&canonical)
        .map_err(|error| SignatureError::NotCanonical(error.to_string()))
}

/// Compares the content of two signed objects, signatures aside.
pub fn same_content(a: &JsonObject, b: &JsonObject) -> bool {
    match (canonical_for_signing(a), canonical_for_signing(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Checks that `value` is an ed25519 public key: 32 bytes in base64.
pub fn is_ed25519_key(value: &str) -> bool {
    BASE64.decode(value).is_ok_and(|bytes| bytes.len() == 32)
}

/// Copies the signature `signatures[signer][key_id]` from `from` into `into`.
pub fn copy_signature(into: &mut JsonObject, from: &JsonObject, signer: &str, key_id: &str) {
    let Some(signature) = from
        .get("signatures")
        .and_then(|signatures| signatures.get(signer))
        .and_then(|by_signer| by_signer.get(key_id))
    else {
        return;
    };
    let signatures = into.entry("signatures").or_insert_with(|| Value::Object(JsonObject::new()));
    if !signatures.is_object() {
        *signatures = Value::Object(JsonObject::new());
    }
    if let Value::Object(signatures) = signatures {
        let by_signer =
            signatures.entry(signer).or_insert_with(|| Value::Object(JsonObject::new()));
        if let Value::Object(by_signer) = by_signer {
            by_signer.insert(key_id.to_owned(), signature.clone());
        }
    }
}

/// Lists every (signer, key ID) pair that signed `object`.
pub fn signature_ids(object: &JsonObject) -> Vec<(String, String)> {
    let Some(Value::Object(signatures)) = object.get("signatures") else { return Vec::new() };
    signatures
        .iter()
        .filter_map(|(signer, by_signer)| by_signer.as_object().map(|keys| (signer, keys)))
        .flat_map(|(signer, keys)| keys.keys().map(move |key_id| (signer.clone(), key_id.clone())))
        .collect()
}

/// Parses a JSON object from raw JSON, or fails with `M_BAD_JSON` naming `what`.
pub fn parse_object(raw: &serde_json::value::RawValue, what: &str) -> Result<JsonObject, Error> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Error::bad_json(format!("{what} must be a JSON object"))),
        Err(error) => Err(Error::bad_json(format!("{what} is not valid JSON: {error}"))),
    }
}

#[cfg(test)]
pub mod test_support {
    //! Signing with real ed25519 keys, for tests.

    use ruma::signatures::{sign_json, Ed25519KeyPair};
    use ruma::CanonicalJsonValue;
    use serde_json::Value;

    use super::BASE64;
    use crate::storage::tables::JsonObject;
    use base64::Engine;

    /// An ed25519 key pair whose key ID is `ed25519:<name>`.
    pub struct SigningKey {
        pair: Ed25519KeyPair,
    }

    impl SigningKey {
        /// Generates a key named `name`, as a device key is named after its device.
        pub fn named(name: &str) -> Self {
            let document = Ed25519KeyPair::generate();
            Self { pair: Ed25519KeyPair::from_der(&document, name.to_owned()).unwrap() }
        }

        /// Generates a key named after its own public key, as cross-signing keys are.
        pub fn self_named() -> Self {
            let document = Ed25519KeyPair::generate();
            let unnamed = Ed25519KeyPair::from_der(&document, String::new()).unwrap();
            let name = BASE64.encode(unnamed.public_key());
            Self { pair: Ed25519KeyPair::from_der(&document, name).unwrap() }
        }

        pub fn public_key(&self) -> String {
            BASE64.encode(self.pair.public_key())
        }

        pub fn key_id(&self) -> String {
            format!("ed25519:{}", self.pair.version())
        }

        /// Adds this key's signature, as `signer`, to a JSON object.
        pub fn sign(&self, signer: &str, object: Value) -> Value {
            let Ok(CanonicalJsonValue::Object(mut canonical)) =
                CanonicalJsonValue::try_from(object)
            else {
                panic!("only objects can be signed");
            };
            sign_json(signer, &self.pair, &mut canonical).unwrap();
            serde_json::to_value(canonical).unwrap()
        }
    }

    pub fn object(value: Value) -> JsonObject {
        match value {
            Value::Object(object) => object,
            _ => panic!("not an object"),
        }
    }
}
