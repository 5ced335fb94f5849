//! The tantivy schema of the directory and the mapping of a [`DirectoryEntry`] onto it.
//!
//! Free-text fields are split into folded words. Filter fields store whole folded values in the
//! inverted index and the original values in a fast column, so a filter on "utrecht" matches
//! "Utrecht" while facet counts show "Utrecht". Scores come from constant per-clause weights, so
//! no field needs term frequencies, positions or field norms.

use tantivy::schema::{
    BytesOptions, Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::TantivyDocument;

use crate::entry::DirectoryEntry;
use crate::error::Result;
use crate::geo;
use crate::text::{KEYWORD_TOKENIZER, WORDS_TOKENIZER};
use crate::vocabulary::Vocabulary;

/// Fast-field and schema names, used by the collector to open columns.
pub(crate) mod names {
    pub const USER_ID: &str = "user_id";
    pub const USER_ID_WORDS: &str = "user_id_words";
    pub const NAME: &str = "name";
    pub const PROFESSION: &str = "profession";
    pub const SPECIALTY: &str = "specialty";
    pub const ORGANISATION: &str = "organisation";
    pub const CITY: &str = "city";
    pub const REGION: &str = "region";
    pub const COUNTRY: &str = "country";
    pub const CONTEXT_WORDS: &str = "context_words";
    pub const LEVEL: &str = "level";
    pub const LISTED: &str = "listed";
    pub const GEO: &str = "geo";
    pub const SOURCE: &str = "source";
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields {
    /// The user ID as one term: deletes, the contact restriction, and the tie-break order.
    pub user_id: Field,
    /// Words of the user ID's localpart, so "anna.jansen" finds `@anna.jansen:example.org`.
    pub user_id_words: Field,
    pub name: Field,
    /// Vocabulary ids of the professions.
    pub profession: Field,
    /// Vocabulary ids of the specialties.
    pub specialty: Field,
    pub organisation: Field,
    pub city: Field,
    pub region: Field,
    pub country: Field,
    /// Free text of everything around the person: organisations, the city, postal code, region
    /// and country of every area, and professions and specialties the vocabulary does not know.
    /// One field instead of one per kind, because they all score alike and every extra field
    /// costs each fuzzy and prefix word another automaton walk.
    pub context_words: Field,
    pub level: Field,
    pub listed: Field,
    /// Packed coordinates of every area that has them, see [`crate::geo`].
    pub geo: Field,
    /// The whole entry as JSON, returned with hits.
    pub source: Field,
}

fn words_options() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(WORDS_TOKENIZER)
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    )
}

/// Returns the options of a filter and facet field: folded whole values in the index, original
/// values in a fast column.
fn keyword_options() -> TextOptions {
    TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(KEYWORD_TOKENIZER)
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        )
        .set_fast("raw")
}

/// Returns the options of an exact field: values indexed and stored in a fast column as given.
fn exact_options() -> TextOptions {
    TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        )
        .set_fast("raw")
}

pub(crate) fn build_schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let fields = Fields {
        user_id: builder.add_text_field(names::USER_ID, exact_options()),
        user_id_words: builder.add_text_field(names::USER_ID_WORDS, words_options()),
        name: builder.add_text_field(names::NAME, words_options()),
        profession: builder.add_text_field(names::PROFESSION, exact_options()),
        specialty: builder.add_text_field(names::SPECIALTY, exact_options()),
        organisation: builder.add_text_field(names::ORGANISATION, keyword_options()),
        city: builder.add_text_field(names::CITY, keyword_options()),
        region: builder.add_text_field(names::REGION, keyword_options()),
        country: builder.add_text_field(names::COUNTRY, keyword_options()),
        context_words: builder.add_text_field(names::CONTEXT_WORDS, words_options()),
        level: builder.add_text_field(names::LEVEL, exact_options()),
        listed: builder.add_bool_field(names::LISTED, NumericOptions::default().set_indexed()),
        geo: builder.add_u64_field(names::GEO, NumericOptions::default().set_fast()),
        source: builder.add_bytes_field(names::SOURCE, BytesOptions::default().set_stored()),
    };
    (builder.build(), fields)
}

/// Maps an entry onto a tantivy document. The entry must have passed
/// [`DirectoryEntry::validate`]. An unlisted entry gets only its user ID, `listed` and its source.
pub(crate) fn document(
    entry: &DirectoryEntry,
    fields: &Fields,
    vocabulary: &Vocabulary,
) -> Result<TantivyDocument> {
    let mut document = TantivyDocument::default();
    document.add_text(fields.user_id, &entry.user_id);
    document.add_bool(fields.listed, entry.listed);
    let source = serde_json::to_vec(entry).map_err(|error| crate::Error::InvalidEntry {
        user_id: entry.user_id.clone(),
        reason: format!("cannot be serialized: {error}"),
    })?;
    document.add_bytes(fields.source, &source);
    if !entry.listed {
        // Nothing searchable, so no text or filter clause can match an unlisted entry; queries
        // without such a clause add a filter on `listed`.
        return Ok(document);
    }

    let localpart = entry.user_id.trim_start_matches('@').split(':').next().unwrap_or_default();
    document.add_text(fields.user_id_words, localpart);
    if let Some(display_name) = &entry.display_name {
        document.add_text(fields.name, display_name);
    }

    for (values, field) in
        [(&entry.professions, fields.profession), (&entry.specialties, fields.specialty)]
    {
        for value in values {
            match vocabulary.resolve(value) {
                Some(id) => document.add_text(field, id),
                None => document.add_text(fields.context_words, value),
            }
        }
    }

    for organisation in &entry.organisations {
        document.add_text(fields.organisation, organisation);
        document.add_text(fields.context_words, organisation);
    }

    for area in &entry.areas {
        for (value, field) in [
            (&area.city, fields.city),
            (&area.region, fields.region),
            (&area.country, fields.country),
        ] {
            if let Some(value) = value {
                document.add_text(field, value);
                document.add_text(fields.context_words, value);
            }
        }
        if let Some(postal_code) = &area.postal_code {
            document.add_text(fields.context_words, postal_code);
        }
        if let Some(coordinates) = area.coordinates {
            document.add_u64(fields.geo, geo::pack(coordinates));
        }
    }

    document.add_text(fields.level, entry.level.as_str());
    Ok(document)
}
