//! The specialty and profession vocabulary: one id per specialty or profession, with its names in
//! English, Dutch, French and German. Entries are indexed with ids, and query words in any of
//! these languages are mapped to ids, so "Kardiologie" finds an entry that lists "cardiology".
//!
//! The built-in vocabulary is `data/specialties.toml`, compiled into the crate.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::text;

const BUILTIN: &str = include_str!("../data/specialties.toml");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TermKind {
    Specialty,
    Profession,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    English,
    Dutch,
    French,
    German,
}

impl Language {
    pub const ALL: [Language; 4] = [Self::English, Self::Dutch, Self::French, Self::German];

    /// Maps an ISO 639-1 code ("en", "nl", "fr", "de") or a locale such as "nl-BE".
    pub fn from_code(code: &str) -> Option<Self> {
        let primary = code.split(['-', '_']).next().unwrap_or_default().to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Self::English),
            "nl" => Some(Self::Dutch),
            "fr" => Some(Self::French),
            "de" => Some(Self::German),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One specialty or profession.
#[derive(Clone, Debug)]
pub struct VocabularyTerm {
    pub id: String,
    pub kind: TermKind,
    /// The label per language, in the order of [`Language::ALL`].
    labels: [String; 4],
}

impl VocabularyTerm {
    pub fn label(&self, language: Language) -> &str {
        &self.labels[language.index()]
    }
}

/// A name of a term, folded into words.
#[derive(Clone, Debug)]
struct Name {
    /// The folded words joined by single spaces.
    text: String,
    word_count: usize,
    term: usize,
}

#[derive(Debug)]
pub struct Vocabulary {
    terms: Vec<VocabularyTerm>,
    by_id: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    names: Vec<Name>,
    max_words: usize,
    fingerprint: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    term: Vec<FileTerm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTerm {
    id: String,
    kind: TermKind,
    en: Vec<String>,
    nl: Vec<String>,
    fr: Vec<String>,
    de: Vec<String>,
    #[serde(default)]
    other: Vec<String>,
}

impl Vocabulary {
    /// Returns the vocabulary compiled from `data/specialties.toml`.
    pub fn builtin() -> &'static Vocabulary {
        static BUILTIN_VOCABULARY: OnceLock<Vocabulary> = OnceLock::new();
        // The file is part of the crate and a unit test parses it, so a failure here is a build
        // defect, not a runtime condition.
        BUILTIN_VOCABULARY.get_or_init(|| {
            Vocabulary::from_toml(BUILTIN).expect("data/specialties.toml is checked by unit tests")
        })
    }

    /// Parses a vocabulary in the format of `data/specialties.toml`.
    pub fn from_toml(source: &str) -> Result<Vocabulary> {
        let file: FileFormat =
            toml::from_str(source).map_err(|error| Error::Vocabulary(error.to_string()))?;
        let mut analyzer = text::words_analyzer();
        let mut vocabulary = Vocabulary {
            terms: Vec::with_capacity(file.term.len()),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
            names: Vec::new(),
            max_words: 1,
            fingerprint: 0,
        };
        let mut fingerprint = Fingerprint::new();

        for (index, term) in file.term.into_iter().enumerate() {
            let valid_id = !term.id.is_empty()
                && term.id.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'_');
            if !valid_id {
                return Err(Error::Vocabulary(format!(
                    "term id {:?} must be lowercase ASCII letters and underscores",
                    term.id
                )));
            }
            if vocabulary.by_id.insert(term.id.clone(), index).is_some() {
                return Err(Error::Vocabulary(format!("term id {:?} appears twice", term.id)));
            }

            let per_language = [&term.en, &term.nl, &term.fr, &term.de];
            let mut labels: [String; 4] = Default::default();
            for (language, names) in Language::ALL.into_iter().zip(per_language) {
                let Some(label) = names.first() else {
                    return Err(Error::Vocabulary(format!(
                        "term {:?} has no name in {language:?}",
                        term.id
                    )));
                };
                labels[language.index()] = label.clone();
            }

            fingerprint = fingerprint.str(&term.id).str(match term.kind {
                TermKind::Specialty => "specialty",
                TermKind::Profession => "profession",
            });
            let all_names = per_language.into_iter().flatten().chain(&term.other);
            for name in all_names {
                let words = text::words(&mut analyzer, name);
                if words.is_empty() {
                    return Err(Error::Vocabulary(format!(
                        "term {:?} has a name without letters: {name:?}",
                        term.id
                    )));
                }
                let folded = words.join(" ");
                fingerprint = fingerprint.str(&folded);
                match vocabulary.by_name.get(&folded) {
                    Some(&owner) if owner == index => continue,
                    Some(&owner) => {
                        return Err(Error::Vocabulary(format!(
                            "name {name:?} belongs to both {:?} and {:?}",
                            vocabulary.terms[owner].id, term.id
                        )));
                    }
                    None => {}
                }
                vocabulary.by_name.insert(folded.clone(), index);
                vocabulary.max_words = vocabulary.max_words.max(words.len());
                vocabulary.names.push(Name { text: folded, word_count: words.len(), term: index });
            }

            vocabulary.terms.push(VocabularyTerm { id: term.id, kind: term.kind, labels });
        }

        vocabulary.names.sort_by(|a, b| a.text.cmp(&b.text));
        vocabulary.fingerprint = fingerprint.finish();
        Ok(vocabulary)
    }

    pub fn terms(&self) -> &[VocabularyTerm] {
        &self.terms
    }

    pub fn term(&self, id: &str) -> Option<&VocabularyTerm> {
        self.by_id.get(id).map(|&index| &self.terms[index])
    }

    /// Returns the id that a name in any language, or an id itself, stands for. Case, accents and
    /// punctuation are ignored.
    pub fn resolve(&self, name: &str) -> Option<&str> {
        if let Some(&index) = self.by_id.get(name) {
            return Some(&self.terms[index].id);
        }
        let folded = text::words(&mut text::words_analyzer(), name).join(" ");
        self.by_name.get(&folded).map(|&index| self.terms[index].id.as_str())
    }

    /// Changes whenever an id, a kind or a name changes, so an index built with an older
    /// vocabulary can be detected.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub(crate) fn id_of(&self, term: usize) -> &str {
        &self.terms[term].id
    }

    /// Returns the largest number of words in a name.
    pub(crate) fn max_words(&self) -> usize {
        self.max_words
    }

    /// Returns the term whose name is exactly these folded words.
    pub(crate) fn lookup_words(&self, words: &[String]) -> Option<usize> {
        self.by_name.get(&words.join(" ")).copied()
    }

    /// Terms with a name that starts with these folded words, the last one possibly incomplete
    /// ("cardio" → cardiology, "wound c" → wound care).
    pub(crate) fn prefix_matches(&self, words: &[String]) -> Vec<usize> {
        let prefix = words.join(" ");
        let start = self.names.partition_point(|name| name.text.as_str() < prefix.as_str());
        let mut terms: Vec<usize> = self.names[start..]
            .iter()
            .take_while(|name| name.text.starts_with(&prefix))
            .map(|name| name.term)
            .collect();
        terms.sort_unstable();
        terms.dedup();
        terms
    }

    /// Terms with a name of exactly these many words where each word is within its fuzzy
    /// distance ([`text::fuzzy_distance`]) of the name's word, and the last word may also be a
    /// prefix when `last_is_prefix` ("medcine generale" → general practice).
    pub(crate) fn fuzzy_phrase_matches(
        &self,
        words: &[String],
        last_is_prefix: bool,
    ) -> Vec<usize> {
        let mut terms: Vec<usize> = self
            .names
            .iter()
            .filter(|name| name.word_count == words.len())
            .filter(|name| {
                let name_words = name.text.split(' ');
                words.iter().zip(name_words).enumerate().all(|(index, (word, name_word))| {
                    let is_last = index + 1 == words.len();
                    if is_last && last_is_prefix && name_word.starts_with(word.as_str()) {
                        return true;
                    }
                    let max = text::fuzzy_distance(word);
                    word == name_word
                        || (max > 0 && text::edit_distance(word, name_word, max) <= max)
                })
            })
            .map(|name| name.term)
            .collect();
        terms.sort_unstable();
        terms.dedup();
        terms
    }

    /// Terms with a one-word name within `max_distance` edits of `word`.
    pub(crate) fn fuzzy_matches(&self, word: &str, max_distance: u8) -> Vec<usize> {
        let mut terms: Vec<usize> = self
            .names
            .iter()
            .filter(|name| name.word_count == 1)
            .filter(|name| text::edit_distance(word, &name.text, max_distance) <= max_distance)
            .map(|name| name.term)
            .collect();
        terms.sort_unstable();
        terms.dedup();
        terms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_vocabulary_parses() {
        let vocabulary = Vocabulary::from_toml(BUILTIN).unwrap();
        assert!(vocabulary.terms().len() >= 40, "only {} terms", vocabulary.terms().len());
        let professions =
            vocabulary.terms().iter().filter(|term| term.kind == TermKind::Profession).count();
        assert!(professions >= 10, "only {professions} professions");
    }

    #[test]
    fn synonyms_resolve_to_one_id() {
        let vocabulary = Vocabulary::builtin();
        for name in [
            "cardiology",
            "cardiologie",
            "Kardiologie",
            "cardioloog",
            "cardiologist",
            "KARDIOLOGIE",
            "cardiólogo",
        ] {
            assert_eq!(vocabulary.resolve(name), Some("cardiology"), "{name}");
        }
        assert_eq!(vocabulary.resolve("huisarts"), Some("general_practice"));
        assert_eq!(vocabulary.resolve("GP"), Some("general_practice"));
        assert_eq!(vocabulary.resolve("general_practice"), Some("general_practice"));
        assert_eq!(vocabulary.resolve("Wundversorgung"), Some("wound_care"));
        assert_eq!(vocabulary.resolve("soins des plaies"), Some("wound_care"));
        assert_eq!(vocabulary.resolve("Gefäßchirurgie"), Some("vascular_surgery"));
        assert_eq!(vocabulary.resolve("verpleegkundige"), Some("nurse"));
        assert_eq!(vocabulary.resolve("infirmière"), Some("nurse"));
        assert_eq!(vocabulary.resolve("médecine d'urgence"), Some("emergency_medicine"));
        assert_eq!(vocabulary.resolve("astrology"), None);
    }

    #[test]
    fn labels_follow_language() {
        let term = Vocabulary::builtin().term("cardiology").unwrap();
        assert_eq!(term.label(Language::English), "cardiology");
        assert_eq!(term.label(Language::Dutch), "cardiologie");
        assert_eq!(term.label(Language::German), "Kardiologie");
        assert_eq!(Language::from_code("nl-BE"), Some(Language::Dutch));
        assert_eq!(Language::from_code("es"), None);
    }

    #[test]
    fn shared_name_is_rejected() {
        let source = r#"
            [[term]]
            id = "a"
            kind = "specialty"
            en = ["same"]
            nl = ["a"]
            fr = ["a"]
            de = ["a"]

            [[term]]
            id = "b"
            kind = "specialty"
            en = ["Same"]
            nl = ["b"]
            fr = ["b"]
            de = ["b"]
        "#;
        let error = Vocabulary::from_toml(source).unwrap_err();
        assert!(error.to_string().contains("belongs to both"), "{error}");
    }

    #[test]
    fn missing_language_is_rejected() {
        let source = r#"
            [[term]]
            id = "a"
            kind = "specialty"
            en = ["a"]
            nl = []
            fr = ["a"]
            de = ["a"]
        "#;
        let error = Vocabulary::from_toml(source).unwrap_err();
        assert!(error.to_string().contains("no name in Dutch"), "{error}");
    }

    #[test]
    fn prefix_and_fuzzy_matching() {
        let vocabulary = Vocabulary::builtin();
        let ids = |terms: Vec<usize>| -> Vec<String> {
            terms.into_iter().map(|term| vocabulary.id_of(term).to_owned()).collect()
        };
        let prefix = ids(vocabulary.prefix_matches(&["wound".to_owned(), "c".to_owned()]));
        assert_eq!(prefix, ["wound_care"]);
        let prefix = ids(vocabulary.prefix_matches(&["cardio".to_owned()]));
        assert!(prefix.contains(&"cardiology".to_owned()), "{prefix:?}");
        assert!(prefix.contains(&"cardiothoracic_surgery".to_owned()), "{prefix:?}");
        let fuzzy = ids(vocabulary.fuzzy_matches("kardiolog", 2));
        assert_eq!(fuzzy, ["cardiology"]);
        let words = |text: &str| -> Vec<String> { text.split(' ').map(str::to_owned).collect() };
        let phrase = ids(vocabulary.fuzzy_phrase_matches(&words("medecine geerale"), false));
        assert_eq!(phrase, ["general_practice"]);
        let phrase = ids(vocabulary.fuzzy_phrase_matches(&words("intrne geneesk"), true));
        assert_eq!(phrase, ["internal_medicine"]);
        assert!(vocabulary.fuzzy_phrase_matches(&words("anna jansen"), true).is_empty());
    }
}
