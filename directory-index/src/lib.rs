//! The professional directory of Caduceus: a tantivy index of healthcare professionals that
//! serves queries such as "cardiologist in Utrecht", "dr jansen" or "wound care Rotterdam",
//! typed fast and with typos.
//!
//! - [`DirectoryEntry`] is what is indexed per user; [`DirectoryBackend`] is the interface the
//!   server calls; [`DirectoryIndex`] implements it in a local folder.
//! - Free text is typo-tolerant and matches the last word as a prefix. Filters and facet counts
//!   cover specialty, profession, organisation, city, region, country and verification level, and
//!   results page with an opaque cursor. See [`SearchRequest`].
//! - Specialties and professions are mapped to the ids of a [`Vocabulary`] with names in English,
//!   Dutch, French and German, so "Kardiologie" finds "cardiology".
//! - A missing or damaged index is reported at open ([`OpenStatus`], [`Error::Damaged`]) so the
//!   server can rebuild it from its store.
//!
//! The crate knows no HTTP and no Matrix types; user IDs are strings.

mod backend;
mod collector;
mod column_cache;
mod cursor;
mod entry;
mod error;
mod fingerprint;
pub mod geo;
mod index;
mod query;
mod schema;
mod search;
mod text;
mod unit;
mod vocabulary;

pub use backend::{DirectoryBackend, RebuildProgress};
pub use entry::{Area, Coordinates, DirectoryEntry, VerificationLevel};
pub use error::{Error, Result};
pub use index::{DirectoryIndex, IndexConfig, OpenStatus};
pub use search::{
    FacetCount, FacetDimension, GeoRadius, SearchFilters, SearchHit, SearchRequest, SearchResults,
    DEFAULT_LIMIT, MAX_FILTER_VALUES, MAX_LIMIT, MAX_QUERY_BYTES, MAX_QUERY_WORDS, MAX_RADIUS_KM,
    MAX_RESTRICT_TO,
};
pub use vocabulary::{Language, TermKind, Vocabulary, VocabularyTerm};
