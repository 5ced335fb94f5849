//! Turns a [`SearchRequest`] into a tantivy query.
//!
//! Free text is split into folded words, and runs of words that form a multi-word vocabulary
//! name ("wound care", "médecine d'urgence") are kept together as one unit. Every unit must match
//! (AND); within a unit the best match counts ([`UnitQuery`]), and units add up. Each way of
//! matching has a constant score, chosen so that for a name an exact word beats a prefix, which
//! beats a typo:
//!
//! | match                                  | exact | prefix | fuzzy |
//! |----------------------------------------|-------|--------|-------|
//! | display name                           | 100   | 60     | 30    |
//! | user ID localpart                      | 90    | 55     | -     |
//! | specialty or profession (vocabulary)   | 80    | 50     | 25    |
//! | organisation, area, unknown specialty  | 40    | 25     | 12    |
//!
//! A multi-word vocabulary name also matches entries that have all its words exactly, anywhere,
//! for 40. A word that is itself a vocabulary name gets no prefix or fuzzy readings, and a word
//! found in some name or context gets no fuzzy vocabulary reading ("Aerts" is a surname, not a
//! typo of "arts").
//!
//! The scores are small integers, so their sums are exact in `f32` whatever order tantivy adds
//! them in. Cursors compare scores for equality and depend on that. Filters add 0.
//!
//! The plan also carries the highest score a match can reach, counting only readings that exist
//! in the index, so a search that does not need the exact total can stop early (see
//! [`crate::collector`]).

use std::ops::Bound;
use std::sync::Arc;

use tantivy::query::{
    BooleanQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery,
    TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Searcher, Term};

use crate::entry::VerificationLevel;
use crate::error::{Error, Result};
use crate::geo;
use crate::schema::Fields;
use crate::search::{SearchFilters, SearchRequest, MAX_QUERY_WORDS};
use crate::text;
use crate::unit::{Source, UnitQuery};
use crate::vocabulary::Vocabulary;

/// Scores of one field for an exact word, a prefix and a fuzzy match. A zero score turns that
/// kind of match off for the field.
#[derive(Clone, Copy)]
struct Tiers {
    exact: f32,
    prefix: f32,
    fuzzy: f32,
}

const NAME: Tiers = Tiers { exact: 100.0, prefix: 60.0, fuzzy: 30.0 };
const USER_ID: Tiers = Tiers { exact: 90.0, prefix: 55.0, fuzzy: 0.0 };
const VOCABULARY: Tiers = Tiers { exact: 80.0, prefix: 50.0, fuzzy: 25.0 };
const CONTEXT: Tiers = Tiers { exact: 40.0, prefix: 25.0, fuzzy: 12.0 };

/// Shortest last word that is also matched as a prefix of vocabulary names; one letter would
/// select most of the vocabulary.
const MIN_VOCABULARY_PREFIX_CHARS: usize = 2;

/// Largest term list matched with plain term queries; see [`any_term`].
const SMALL_TERM_SET: usize = 16;

/// The kinds of match a word gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expansion {
    /// Exact, prefix (for the word being typed) and fuzzy.
    Full,
    /// Exact words and vocabulary names only.
    ExactOnly,
}

/// Part of the free text that must match.
#[derive(Debug)]
enum Unit {
    /// One word; `prefix` when it is the last word and still being typed.
    Word { word: String, prefix: bool },
    /// Words that together form the names of vocabulary terms: exactly, as a prefix (for the
    /// last words of the query), or with typos. `score` is the vocabulary tier of that match, and
    /// `prefix` whether the last word is still being typed.
    Phrase { words: Vec<String>, terms: Vec<usize>, score: f32, prefix: bool },
}

pub(crate) struct Planner<'a> {
    pub searcher: &'a Searcher,
    pub fields: &'a Fields,
    pub vocabulary: &'a Vocabulary,
    pub analyzer: &'a mut TextAnalyzer,
}

/// A query with the highest score a document can reach with it.
pub(crate) struct Plan {
    pub query: Box<dyn Query>,
    /// An upper bound of the score of any match, used to stop a search early once enough
    /// documents with this score are found. It counts only clauses that can match at all.
    pub max_score: f32,
}

impl Planner<'_> {
    pub(crate) fn build(&mut self, request: &SearchRequest) -> Result<Plan> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut max_score = 0.0;
        for unit in self.units(&request.query)? {
            let plan = self.unit_query(&unit)?;
            max_score += plan.max_score;
            clauses.push((Occur::Must, plan.query));
        }
        let mut exclusions = Vec::new();
        for (occur, query) in self.filter_queries(&request.filters)? {
            match occur {
                Occur::MustNot => exclusions.push((occur, query)),
                _ => clauses.push((occur, filter(query))),
            }
        }

        // The collector checks the exact distance of every match. When nothing else narrows
        // the search down, a latitude band does, so that not every entry is checked.
        if let (true, Some(near)) = (clauses.is_empty(), request.filters.near) {
            let (low, high) = geo::latitude_band(near.center, near.radius_km);
            let band = RangeQuery::new(
                Bound::Included(Term::from_field_u64(self.fields.geo, low)),
                Bound::Included(Term::from_field_u64(self.fields.geo, high)),
            );
            clauses.push((Occur::Must, filter(Box::new(band))));
        }

        // Unlisted entries have no searchable field (see `schema::document`), so any required
        // clause so far excludes them. Without one, `listed` does; it is left out otherwise
        // because it matches almost every document and intersecting with it costs time per match.
        if clauses.is_empty() {
            let listed = TermQuery::new(
                Term::from_field_bool(self.fields.listed, true),
                IndexRecordOption::Basic,
            );
            clauses.push((Occur::Must, filter(Box::new(listed))));
        }
        if let Some(user_ids) = &request.restrict_to {
            let terms =
                user_ids.iter().map(|user_id| Term::from_field_text(self.fields.user_id, user_id));
            clauses.push((Occur::Must, filter(Box::new(TermSetQuery::new(terms)))));
        }
        clauses.extend(exclusions);
        Ok(Plan { query: Box::new(BooleanQuery::new(clauses)), max_score })
    }

    fn units(&mut self, query: &str) -> Result<Vec<Unit>> {
        let words = text::words(self.analyzer, query);
        if words.len() > MAX_QUERY_WORDS {
            return Err(Error::InvalidRequest(format!(
                "the query has {} words; the maximum is {MAX_QUERY_WORDS}",
                words.len()
            )));
        }
        // A query that ends in a letter or digit is still being typed.
        let typing = query.chars().last().is_some_and(char::is_alphanumeric);

        let mut units = Vec::with_capacity(words.len());
        let mut start = 0;
        while start < words.len() {
            let (unit, consumed) = self.next_unit(&words[start..], typing);
            units.push(unit);
            start += consumed;
        }

        let is_filler = |unit: &Unit| match unit {
            Unit::Word { word, prefix } => !prefix && text::is_filler_word(word),
            Unit::Phrase { .. } => false,
        };
        if units.iter().any(|unit| !is_filler(unit)) {
            units.retain(|unit| !is_filler(unit));
        }
        Ok(units)
    }

    /// Reads one unit from the start of `words`: the longest run of words that is a vocabulary
    /// name, or a single word. Returns it with the number of words it consumed.
    fn next_unit(&self, words: &[String], typing: bool) -> (Unit, usize) {
        let longest = self.vocabulary.max_words().min(words.len());
        for len in (2..=longest).rev() {
            let run = &words[..len];
            let prefix = typing && len == words.len();
            let phrase = |terms: Vec<usize>, score: f32| {
                let unit = Unit::Phrase { words: run.to_vec(), terms, score, prefix };
                (unit, len)
            };
            if let Some(term) = self.vocabulary.lookup_words(run) {
                return phrase(vec![term], VOCABULARY.exact);
            }
            if prefix {
                let terms = self.vocabulary.prefix_matches(run);
                if !terms.is_empty() {
                    return phrase(terms, VOCABULARY.prefix);
                }
            }
            let terms = self.vocabulary.fuzzy_phrase_matches(run, prefix);
            if !terms.is_empty() {
                return phrase(terms, VOCABULARY.fuzzy);
            }
        }
        let prefix = typing && words.len() == 1;
        (Unit::Word { word: words[0].clone(), prefix }, 1)
    }

    fn unit_query(&self, unit: &Unit) -> Result<Plan> {
        match unit {
            Unit::Word { word, prefix } => self.word_query(word, *prefix, Expansion::Full),
            Unit::Phrase { words, terms, score, prefix } => {
                let mut alternatives = self.vocabulary_sources(terms, *score);
                // The words may also match one by one elsewhere ("general" in an organisation).
                // Only exactly, because the phrase already took the typo-tolerant reading, and
                // fuzzy automatons for every word of a long phrase are expensive.
                let mut word_clauses = Vec::with_capacity(words.len());
                for (index, word) in words.iter().enumerate() {
                    let is_last = index + 1 == words.len();
                    let plan = self.word_query(word, *prefix && is_last, Expansion::ExactOnly)?;
                    word_clauses.push((Occur::Must, plan.query));
                }
                let separately: Box<dyn Query> = Box::new(BooleanQuery::new(word_clauses));
                alternatives.push((Source::Query(separately), CONTEXT.exact));
                Ok(Plan {
                    query: Box::new(UnitQuery::new(alternatives)),
                    max_score: score.max(CONTEXT.exact),
                })
            }
        }
    }

    /// Builds the ways one word can match, of which the best counts.
    fn word_query(&self, word: &str, prefix: bool, expansion: Expansion) -> Result<Plan> {
        let fields = self.fields;
        let text_fields: [(Field, Tiers); 3] =
            [(fields.name, NAME), (fields.user_id_words, USER_ID), (fields.context_words, CONTEXT)];
        let mut alternatives: Vec<(Source, f32)> = Vec::new();
        let mut max_score: f32 = 0.0;
        let mut in_name_or_context = false;

        for (field, tiers) in text_fields {
            let term = Term::from_field_text(field, word);
            // Words no entry has are left out, which keeps the score bound tight.
            if self.searcher.doc_freq(&term)? == 0 {
                continue;
            }
            in_name_or_context |= field != fields.user_id_words;
            alternatives.push((Source::Term(term), tiers.exact));
            max_score = max_score.max(tiers.exact);
        }

        let words = [word.to_owned()];
        let vocabulary_term = self.vocabulary.lookup_words(&words);
        if let Some(term) = vocabulary_term {
            alternatives.extend(self.vocabulary_sources(&[term], VOCABULARY.exact));
            max_score = max_score.max(VOCABULARY.exact);
        }
        if prefix && word.chars().count() >= MIN_VOCABULARY_PREFIX_CHARS {
            let terms = self.vocabulary.prefix_matches(&words);
            if !terms.is_empty() {
                alternatives.extend(self.vocabulary_sources(&terms, VOCABULARY.prefix));
                max_score = max_score.max(VOCABULARY.prefix);
            }
        }

        // A word that names a specialty or profession is taken as one, not as a name being typed
        // or misspelt. This saves the automatons, the costliest part of a query.
        let expand = expansion == Expansion::Full && vocabulary_term.is_none();
        if prefix && expand {
            let automaton = Arc::new(
                FuzzyTermQuery::new_prefix(Term::from_field_text(fields.name, word), 0, true)
                    .automaton()?,
            );
            for (field, tiers) in text_fields {
                if self.has_term_with_prefix(field, word)? {
                    alternatives
                        .push((Source::Automaton(field, Arc::clone(&automaton)), tiers.prefix));
                    max_score = max_score.max(tiers.prefix);
                }
            }
        }

        let distance = text::fuzzy_distance(word);
        if distance > 0 && expand {
            let automaton = Arc::new(
                FuzzyTermQuery::new(Term::from_field_text(fields.name, word), distance, true)
                    .automaton()?,
            );
            for (field, tiers) in text_fields {
                if tiers.fuzzy > 0.0 {
                    alternatives
                        .push((Source::Automaton(field, Arc::clone(&automaton)), tiers.fuzzy));
                    max_score = max_score.max(tiers.fuzzy);
                }
            }
            // A word that is someone's name or place is no misspelt specialty: "Aerts" is a
            // surname, not a typo of "arts" (physician), which would match a third of everyone.
            if !in_name_or_context {
                let terms = self.vocabulary.fuzzy_matches(word, distance);
                if !terms.is_empty() {
                    alternatives.extend(self.vocabulary_sources(&terms, VOCABULARY.fuzzy));
                    max_score = max_score.max(VOCABULARY.fuzzy);
                }
            }
        }

        Ok(Plan { query: Box::new(UnitQuery::new(alternatives)), max_score })
    }

    /// Returns whether some segment has a term in `field` that starts with `prefix`.
    fn has_term_with_prefix(&self, field: Field, prefix: &str) -> Result<bool> {
        for segment in self.searcher.segment_readers() {
            let inverted_index = segment.inverted_index(field)?;
            let mut terms = inverted_index.terms().range().ge(prefix).into_stream()?;
            if terms.advance() && terms.key().starts_with(prefix.as_bytes()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Entries with any of these vocabulary terms as a specialty or a profession.
    fn vocabulary_sources(&self, terms: &[usize], score: f32) -> Vec<(Source, f32)> {
        let mut sources = Vec::with_capacity(terms.len() * 2);
        for &term in terms {
            let id = self.vocabulary.id_of(term);
            for field in [self.fields.specialty, self.fields.profession] {
                sources.push((Source::Term(Term::from_field_text(field, id)), score));
            }
        }
        sources
    }

    /// Clauses for the filters: required ones, and exclusions where excluding is cheaper.
    fn filter_queries(&self, filters: &SearchFilters) -> Result<Vec<(Occur, Box<dyn Query>)>> {
        let fields = self.fields;
        let mut queries: Vec<(Occur, Box<dyn Query>)> = Vec::new();

        for (values, field) in
            [(&filters.specialties, fields.specialty), (&filters.professions, fields.profession)]
        {
            if values.is_empty() {
                continue;
            }
            let mut terms = Vec::with_capacity(values.len());
            for value in values {
                let id = self
                    .vocabulary
                    .resolve(value)
                    .ok_or_else(|| Error::UnknownSpecialty(value.clone()))?;
                terms.push(Term::from_field_text(field, id));
            }
            queries.push((Occur::Must, any_term(terms)));
        }

        let keyword_filters = [
            (&filters.organisations, fields.organisation),
            (&filters.cities, fields.city),
            (&filters.regions, fields.region),
            (&filters.countries, fields.country),
        ];
        for (values, field) in keyword_filters {
            if values.is_empty() {
                continue;
            }
            let terms = values
                .iter()
                .map(|value| Term::from_field_text(field, &text::fold_keyword(value)))
                .collect();
            queries.push((Occur::Must, any_term(terms)));
        }

        if !filters.levels.is_empty() {
            // Two of three levels is the common case ("verified"); excluding the third is far
            // cheaper than intersecting with the two large posting lists.
            let excluded: Vec<Term> = VerificationLevel::ALL
                .into_iter()
                .filter(|level| !filters.levels.contains(level))
                .map(|level| Term::from_field_text(fields.level, level.as_str()))
                .collect();
            let included: Vec<Term> = VerificationLevel::ALL
                .into_iter()
                .filter(|level| filters.levels.contains(level))
                .map(|level| Term::from_field_text(fields.level, level.as_str()))
                .collect();
            match excluded.len() {
                0 => {}
                1 => queries.push((Occur::MustNot, any_term(excluded))),
                _ => queries.push((Occur::Must, any_term(included))),
            }
        }

        Ok(queries)
    }
}

/// Documents with any of the terms. A handful of term queries is cheaper than a
/// `TermSetQuery`, which compiles its terms into an automaton for every search.
fn any_term(mut terms: Vec<Term>) -> Box<dyn Query> {
    if terms.len() > SMALL_TERM_SET {
        return Box::new(TermSetQuery::new(terms));
    }
    if terms.len() == 1 {
        if let Some(term) = terms.pop() {
            return Box::new(TermQuery::new(term, IndexRecordOption::Basic));
        }
    }
    let clauses: Vec<(Occur, Box<dyn Query>)> = terms
        .into_iter()
        .map(|term| -> (Occur, Box<dyn Query>) {
            (Occur::Should, Box::new(TermQuery::new(term, IndexRecordOption::Basic)))
        })
        .collect();
    Box::new(BooleanQuery::new(clauses))
}

/// Wraps a clause so that it restricts matches without adding to the score.
fn filter(query: Box<dyn Query>) -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(query, 0.0))
}
