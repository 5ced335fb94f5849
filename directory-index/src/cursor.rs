//! Paging cursors. A cursor contains the score and user ID of the last hit of a page, so the next
//! page starts strictly after it in the (score descending, user ID ascending) order. Unlike an
//! offset, this neither repeats nor skips entries when entries before the cursor change.
//!
//! A cursor also contains a fingerprint of the query and filters, and is rejected when used with
//! another query. Encoding: URL-safe base64 without padding of a version byte, the fingerprint
//! (8 bytes, big-endian), the score bits (4 bytes, big-endian) and the user ID in UTF-8.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::search::SearchRequest;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 8 + 4;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cursor {
    pub score: f32,
    pub user_id: String,
}

impl Cursor {
    pub(crate) fn encode(&self, fingerprint: u64) -> String {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.user_id.len());
        bytes.push(VERSION);
        bytes.extend_from_slice(&fingerprint.to_be_bytes());
        bytes.extend_from_slice(&self.score.to_bits().to_be_bytes());
        bytes.extend_from_slice(self.user_id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a cursor and checks that it was issued for a request with `fingerprint`.
    pub(crate) fn decode(cursor: &str, fingerprint: u64) -> Result<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| Error::InvalidCursor)?;
        if bytes.len() <= HEADER_LEN || bytes[0] != VERSION {
            return Err(Error::InvalidCursor);
        }
        let issued_for =
            u64::from_be_bytes(bytes[1..9].try_into().map_err(|_| Error::InvalidCursor)?);
        if issued_for != fingerprint {
            return Err(Error::InvalidCursor);
        }
        let score_bits =
            u32::from_be_bytes(bytes[9..13].try_into().map_err(|_| Error::InvalidCursor)?);
        let score = f32::from_bits(score_bits);
        if !score.is_finite() {
            return Err(Error::InvalidCursor);
        }
        let user_id =
            String::from_utf8(bytes[HEADER_LEN..].to_vec()).map_err(|_| Error::InvalidCursor)?;
        Ok(Cursor { score, user_id })
    }
}

/// Hashes everything that decides which entries match and in what order: the query text, the
/// filters and the restriction. Page size and facets may change between pages.
pub(crate) fn request_fingerprint(request: &SearchRequest) -> u64 {
    let filters = &request.filters;
    let mut fingerprint = Fingerprint::new().str(&request.query);
    let lists = [
        &filters.specialties,
        &filters.professions,
        &filters.organisations,
        &filters.cities,
        &filters.regions,
        &filters.countries,
    ];
    for list in lists {
        fingerprint = fingerprint.bytes(&(list.len() as u64).to_be_bytes());
        for value in list {
            fingerprint = fingerprint.str(value);
        }
    }
    fingerprint = fingerprint.bytes(&(filters.levels.len() as u64).to_be_bytes());
    for level in &filters.levels {
        fingerprint = fingerprint.str(level.as_str());
    }
    match filters.near {
        Some(near) => {
            fingerprint = fingerprint
                .bytes(&[1])
                .bytes(&near.center.lat.to_bits().to_be_bytes())
                .bytes(&near.center.lon.to_bits().to_be_bytes())
                .bytes(&near.radius_km.to_bits().to_be_bytes());
        }
        None => fingerprint = fingerprint.bytes(&[0]),
    }
    match &request.restrict_to {
        Some(user_ids) => {
            fingerprint = fingerprint.bytes(&[1]).bytes(&(user_ids.len() as u64).to_be_bytes());
            // A BTreeSet iterates in order, so equal sets hash equally.
            for user_id in user_ids {
                fingerprint = fingerprint.str(user_id);
            }
        }
        None => fingerprint = fingerprint.bytes(&[0]),
    }
    fingerprint.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let cursor = Cursor { score: 130.0, user_id: "@anna:example.org".to_owned() };
        let encoded = cursor.encode(42);
        assert_eq!(Cursor::decode(&encoded, 42).unwrap(), cursor);
    }

    #[test]
    fn cursor_of_other_query_is_rejected() {
        let encoded = Cursor { score: 1.0, user_id: "@a:b".to_owned() }.encode(42);
        assert!(matches!(Cursor::decode(&encoded, 43), Err(Error::InvalidCursor)));
    }

    #[test]
    fn garbage_cursor_is_rejected() {
        for garbage in ["", "!!!", "AAAA", &URL_SAFE_NO_PAD.encode([1u8; 13])] {
            assert!(matches!(Cursor::decode(garbage, 0), Err(Error::InvalidCursor)), "{garbage}");
        }
    }

    #[test]
    fn fingerprint_depends_on_query_and_filters() {
        let base = SearchRequest::new("jansen");
        let mut other_query = base.clone();
        other_query.query = "janssen".to_owned();
        let mut other_filter = base.clone();
        other_filter.filters.cities.push("Utrecht".to_owned());
        let mut other_page = base.clone();
        other_page.limit = 50;

        assert_ne!(request_fingerprint(&base), request_fingerprint(&other_query));
        assert_ne!(request_fingerprint(&base), request_fingerprint(&other_filter));
        assert_eq!(request_fingerprint(&base), request_fingerprint(&other_page));
    }
}
