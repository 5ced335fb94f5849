//! The record indexed per user, and its validation.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Maximum length in bytes of a user ID; the Matrix specification allows 255.
const MAX_USER_ID_BYTES: usize = 255;
/// Maximum length in bytes of one text value (a name, an organisation, a city).
const MAX_TEXT_BYTES: usize = 512;
/// Maximum number of values in one list (specialties, organisations, areas).
const MAX_LIST_LEN: usize = 64;

/// How far a user's healthcare identity is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationLevel {
    /// A new account, not verified yet.
    Pending,
    /// Verified as staff of a trusted organisation.
    Identity,
    /// Registration number matched against a professional register.
    Medical,
}

impl VerificationLevel {
    pub const ALL: [VerificationLevel; 3] = [Self::Pending, Self::Identity, Self::Medical];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Identity => "identity",
            Self::Medical => "medical",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.as_str() == value)
    }
}

/// A point on the earth in decimal degrees (WGS 84).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coordinates {
    pub lat: f64,
    pub lon: f64,
}

impl Coordinates {
    pub fn is_valid(self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }
}

/// A place where a professional works. Every part is optional because registers and profiles
/// often know only some of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Area {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An ISO 3166-1 alpha-2 code such as `NL` is recommended, so that filters and facet counts
    /// group one country under one value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<Coordinates>,
}

/// Everything the directory indexes about one user. The server builds it from its profile and
/// verification records and calls [`crate::DirectoryBackend::upsert`] whenever one of them changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// The Matrix user ID, such as `@anna.jansen:umcutrecht.nl`.
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The `mxc://` URI of the avatar; stored for result lists, never searched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// Professions, as vocabulary ids or as names in any language of the vocabulary ("nurse",
    /// "verpleegkundige"). Names the vocabulary does not know are still searchable as free text,
    /// but they are left out of filters and facet counts.
    #[serde(default)]
    pub professions: Vec<String>,
    /// Specialties, resolved like `professions`.
    #[serde(default)]
    pub specialties: Vec<String>,
    /// Hospitals, practices and other organisations the user works for.
    #[serde(default)]
    pub organisations: Vec<String>,
    #[serde(default)]
    pub areas: Vec<Area>,
    pub level: VerificationLevel,
    /// Whether the user appears in search results. Unlisted entries stay in the index so that
    /// [`crate::DirectoryBackend::get`] and a rebuild see the same records as the store, but no
    /// search returns or counts them.
    pub listed: bool,
}

impl DirectoryEntry {
    /// Checks the limits that keep one entry from bloating the index or breaking a query.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Error::InvalidEntry {
            user_id: self.user_id.chars().take(MAX_USER_ID_BYTES).collect(),
            reason,
        };

        if self.user_id.is_empty() {
            return Err(invalid("the user ID is empty".to_owned()));
        }
        if self.user_id.len() > MAX_USER_ID_BYTES {
            return Err(invalid(format!("the user ID is longer than {MAX_USER_ID_BYTES} bytes")));
        }
        if !self.user_id.starts_with('@') || !self.user_id.contains(':') {
            return Err(invalid("the user ID is not of the form @localpart:server".to_owned()));
        }

        let lists: [(&str, &[String]); 3] = [
            ("professions", &self.professions),
            ("specialties", &self.specialties),
            ("organisations", &self.organisations),
        ];
        for (name, values) in lists {
            if values.len() > MAX_LIST_LEN {
                return Err(invalid(format!("more than {MAX_LIST_LEN} {name}")));
            }
            check_texts(name, values.iter().map(String::as_str)).map_err(invalid)?;
        }
        if self.areas.len() > MAX_LIST_LEN {
            return Err(invalid(format!("more than {MAX_LIST_LEN} areas")));
        }

        let texts = [
            ("display_name", self.display_name.as_deref()),
            ("avatar_url", self.avatar_url.as_deref()),
        ];
        for (name, value) in texts {
            check_texts(name, value).map_err(invalid)?;
        }
        for area in &self.areas {
            let parts = [
                ("city", area.city.as_deref()),
                ("postal_code", area.postal_code.as_deref()),
                ("region", area.region.as_deref()),
                ("country", area.country.as_deref()),
            ];
            for (name, value) in parts {
                check_texts(name, value).map_err(invalid)?;
            }
            if let Some(coordinates) = area.coordinates {
                if !coordinates.is_valid() {
                    return Err(invalid(format!(
                        "coordinates ({}, {}) are outside latitude -90..90 and longitude -180..180",
                        coordinates.lat, coordinates.lon
                    )));
                }
            }
        }
        Ok(())
    }
}

fn check_texts<'a>(
    name: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> std::result::Result<(), String> {
    for value in values {
        if value.len() > MAX_TEXT_BYTES {
            return Err(format!("a value of {name} is longer than {MAX_TEXT_BYTES} bytes"));
        }
    }
    Ok(())
}
