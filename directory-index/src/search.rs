//! Search requests and results.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::entry::{Coordinates, DirectoryEntry, VerificationLevel};
use crate::error::{Error, Result};

/// Largest page a search returns; larger limits are lowered to it.
pub const MAX_LIMIT: usize = 100;
/// Page size of a request with a limit of 0.
pub const DEFAULT_LIMIT: usize = 20;
/// Maximum length of a free-text query in bytes.
pub const MAX_QUERY_BYTES: usize = 256;
/// Most words a free-text query may have after analysis.
pub const MAX_QUERY_WORDS: usize = 12;
/// Maximum number of values per filter list.
pub const MAX_FILTER_VALUES: usize = 64;
/// Most user IDs in a restriction; contact lists are far smaller.
pub const MAX_RESTRICT_TO: usize = 100_000;
/// Largest search radius: half the earth's circumference.
pub const MAX_RADIUS_KM: f64 = 20_038.0;

/// A point and a radius; matching entries have at least one area within the radius.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeoRadius {
    pub center: Coordinates,
    pub radius_km: f64,
}

/// Exact filters. Values within one list are alternatives (any of them matches); lists combine
/// (all of them must match). An empty list filters nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchFilters {
    /// Vocabulary ids or names in any vocabulary language; an unknown value is rejected with
    /// [`Error::UnknownSpecialty`].
    pub specialties: Vec<String>,
    /// Like `specialties`, for professions.
    pub professions: Vec<String>,
    /// Organisation names; case and accents are ignored.
    pub organisations: Vec<String>,
    pub cities: Vec<String>,
    pub regions: Vec<String>,
    pub countries: Vec<String>,
    pub levels: Vec<VerificationLevel>,
    /// Entries without coordinates never match a radius filter.
    pub near: Option<GeoRadius>,
}

impl SearchFilters {
    pub(crate) fn validate(&self) -> Result<()> {
        let lists = [
            ("specialties", self.specialties.len()),
            ("professions", self.professions.len()),
            ("organisations", self.organisations.len()),
            ("cities", self.cities.len()),
            ("regions", self.regions.len()),
            ("countries", self.countries.len()),
            ("levels", self.levels.len()),
        ];
        for (name, len) in lists {
            if len > MAX_FILTER_VALUES {
                return Err(Error::InvalidRequest(format!(
                    "the {name} filter has {len} values; the maximum is {MAX_FILTER_VALUES}"
                )));
            }
        }
        if let Some(near) = self.near {
            if !near.center.is_valid() {
                return Err(Error::InvalidRequest(format!(
                    "the radius center ({}, {}) is outside latitude -90..90 and longitude -180..180",
                    near.center.lat, near.center.lon
                )));
            }
            if !(near.radius_km > 0.0 && near.radius_km <= MAX_RADIUS_KM) {
                return Err(Error::InvalidRequest(format!(
                    "the radius {} km must be above 0 and at most {MAX_RADIUS_KM} km",
                    near.radius_km
                )));
            }
        }
        Ok(())
    }
}

/// A dimension for which a search counts matching entries per value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FacetDimension {
    /// Values are vocabulary ids.
    Specialty,
    /// Values are vocabulary ids.
    Profession,
    Organisation,
    City,
    Region,
    Country,
    /// Values are `pending`, `identity` and `medical`.
    Level,
}

impl FacetDimension {
    pub const ALL: [FacetDimension; 7] = [
        Self::Specialty,
        Self::Profession,
        Self::Organisation,
        Self::City,
        Self::Region,
        Self::Country,
        Self::Level,
    ];
}

/// A search. Deserializing fills absent fields from [`SearchRequest::default`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchRequest {
    /// Free text over names, user IDs, specialties, professions, organisations and areas. Typos
    /// are tolerated, and the last word also matches as a prefix unless the text ends with a
    /// space. Empty text matches every listed entry that passes the filters.
    pub query: String,
    pub filters: SearchFilters,
    /// When set, only these users can match; the server uses it for users who may search only
    /// their contacts. An empty set matches no entry.
    pub restrict_to: Option<BTreeSet<String>>,
    /// Page size, at most [`MAX_LIMIT`]; 0 means [`DEFAULT_LIMIT`].
    pub limit: usize,
    /// The `next_cursor` of the previous page of the same query.
    pub cursor: Option<String>,
    /// Dimensions to count matching entries for.
    pub facets: Vec<FacetDimension>,
    /// Most values returned per facet dimension, the most frequent first.
    pub facet_limit: usize,
    /// Whether `total` must count every match. When false and no facets are requested, a search
    /// may stop as soon as the page is certain, which keeps broad type-ahead queries ("d", "de")
    /// fast on large directories. `total` is then a lower bound.
    pub exact_total: bool,
}

impl Default for SearchRequest {
    fn default() -> Self {
        Self {
            query: String::new(),
            filters: SearchFilters::default(),
            restrict_to: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
            facets: Vec::new(),
            facet_limit: 10,
            exact_total: true,
        }
    }
}

impl SearchRequest {
    pub fn new(query: impl Into<String>) -> Self {
        Self { query: query.into(), ..Self::default() }
    }

    /// Returns the page size after applying the default and the maximum.
    pub fn effective_limit(&self) -> usize {
        match self.limit {
            0 => DEFAULT_LIMIT,
            limit => limit.min(MAX_LIMIT),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.query.len() > MAX_QUERY_BYTES {
            return Err(Error::InvalidRequest(format!(
                "the query is {} bytes long; the maximum is {MAX_QUERY_BYTES}",
                self.query.len()
            )));
        }
        if let Some(restrict_to) = &self.restrict_to {
            if restrict_to.len() > MAX_RESTRICT_TO {
                return Err(Error::InvalidRequest(format!(
                    "the restriction lists {} users; the maximum is {MAX_RESTRICT_TO}",
                    restrict_to.len()
                )));
            }
        }
        self.filters.validate()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub entry: DirectoryEntry,
    /// Relevance: the sum over query words of the best-matching field's weight. Equal scores
    /// are ordered by user ID.
    pub score: f32,
    /// Distance from the radius center to the nearest area of the entry, when the request has a
    /// radius filter.
    pub distance_km: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacetCount {
    pub value: String,
    pub count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// Number of listed entries matching the query and filters, over all pages; a lower bound
    /// when `total_is_exact` is false.
    pub total: u64,
    pub total_is_exact: bool,
    /// Counts per requested dimension over all matching entries, the most frequent value
    /// first, ties by value.
    pub facets: BTreeMap<FacetDimension, Vec<FacetCount>>,
    /// Present when more results follow; pass it as `cursor` with the same query.
    pub next_cursor: Option<String>,
}
