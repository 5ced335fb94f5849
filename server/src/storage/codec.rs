//! Key encodings that sort the way tables are scanned.
//!
//! String parts are UTF-8 followed by a `0xFF` separator, a byte that never occurs in UTF-8, so
//! the keys of one user (or one user and room) form a contiguous range that [`prefix`] selects.
//! Integers are big-endian so that they sort numerically.

/// The byte after each string part of a composite key.
pub const SEPARATOR: u8 = 0xFF;

/// Encoding and decoding of a table's keys.
pub trait KeyCodec: Sized {
    fn encode_key(&self) -> Vec<u8>;
    fn decode_key(bytes: &[u8]) -> Result<Self, String>;
}

/// Builds the scan prefix that selects every key starting with these string parts.
pub fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for part in parts {
        bytes.extend_from_slice(part.as_bytes());
        bytes.push(SEPARATOR);
    }
    bytes
}

fn split_parts(bytes: &[u8], count: usize) -> Result<Vec<String>, String> {
    let parts: Vec<&[u8]> = bytes.split(|byte| *byte == SEPARATOR).collect();
    // A key of `count` parts ends with a separator, so splitting yields one empty tail.
    if parts.len() != count + 1 || !parts[count].is_empty() {
        return Err(format!("expected a key of {count} parts, found {} bytes", bytes.len()));
    }
    parts[..count]
        .iter()
        .map(|part| String::from_utf8(part.to_vec()).map_err(|e| e.to_string()))
        .collect()
}

impl KeyCodec for String {
    fn encode_key(&self) -> Vec<u8> {
        prefix(&[self])
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, String> {
        Ok(split_parts(bytes, 1)?.remove(0))
    }
}

impl KeyCodec for (String, String) {
    fn encode_key(&self) -> Vec<u8> {
        prefix(&[&self.0, &self.1])
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, String> {
        let mut parts = split_parts(bytes, 2)?.into_iter();
        Ok((parts.next().unwrap_or_default(), parts.next().unwrap_or_default()))
    }
}

impl KeyCodec for (String, String, String) {
    fn encode_key(&self) -> Vec<u8> {
        prefix(&[&self.0, &self.1, &self.2])
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, String> {
        let mut parts = split_parts(bytes, 3)?.into_iter();
        Ok((
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        ))
    }
}

/// Raw bytes, such as a token hash, used as they are.
impl KeyCodec for Vec<u8> {
    fn encode_key(&self) -> Vec<u8> {
        self.clone()
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, String> {
        Ok(bytes.to_vec())
    }
}

impl KeyCodec for u64 {
    fn encode_key(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, String> {
        let array: [u8; 8] =
            bytes.try_into().map_err(|_| format!("expected 8 bytes, found {}", bytes.len()))?;
        Ok(u64::from_be_bytes(array))
    }
}

/// A string part followed by a big-endian position, such as (room ID, stream position): the
/// entries of one room sort by position.
impl KeyCodec for (String, u64) {
    fn encode_key(&self) -> Vec<u8> {
        let mut bytes = prefix(&[&self.0]);
        bytes.extend_from_slice(&self.1.to_be_bytes());
        bytes
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 9 || bytes[bytes.len() - 9] != SEPARATOR {
            return Err(format!("expected a string and a position, found {} bytes", bytes.len()));
        }
        let (text, position) = bytes.split_at(bytes.len() - 9);
        let text = String::from_utf8(text.to_vec()).map_err(|e| e.to_string())?;
        let position = u64::decode_key(&position[1..])?;
        Ok((text, position))
    }
}

impl KeyCodec for (String, String, String, String) {
    fn encode_key(&self) -> Vec<u8> {
        prefix(&[&self.0, &self.1, &self.2, &self.3])
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, String> {
        let mut parts = split_parts(bytes, 4)?.into_iter();
        Ok((
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        ))
    }
}

/// Two string parts and a big-endian integer, so the records under one (user, device) pair sort
/// by position. The integer is last and has a fixed width, so its bytes may contain `0xFF`.
impl KeyCodec for (String, String, u64) {
    fn encode_key(&self) -> Vec<u8> {
        let mut bytes = prefix(&[&self.0, &self.1]);
        bytes.extend_from_slice(&self.2.to_be_bytes());
        bytes
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, String> {
        let Some(split) = bytes.len().checked_sub(8) else {
            return Err(format!("expected at least 8 bytes, found {}", bytes.len()));
        };
        let mut parts = split_parts(&bytes[..split], 2)?.into_iter();
        let number = u64::decode_key(&bytes[split..])?;
        Ok((parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), number))
    }
}
