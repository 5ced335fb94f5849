//! Comparing the display name of an account with the name in a register entry.
//!
//! Both names are reduced to lowercase ASCII-like words: accents are dropped (é = e), titles
//! such as "Dr." are removed, and surname prefixes ("van der", "de", "le", "ter"...) are left out
//! of the comparison, because people write them in many ways ("Van den Berg", "Berg, J. van
//! den", "vandenberg"). Word order does not matter. The register's surname must appear in the
//! display name; then the given names are compared, where an initial matches a full name.
//!
//! The result is a score from 0 to 100 with one of three outcomes:
//!
//! | points | for |
//! |---|---|
//! | 60 | the whole surname |
//! | 40 | part of a double surname missing, or one typo in the surname |
//! | 40 | a given name written the same |
//! | 30 | a given name against its initial, or two equal initials |
//! | 25 | a given name with one typo |
//! | 10 | two different given names with the same initial ("Jan" and "Johannes") |
//! | -10 | each word of the display name found nowhere in the entry |
//!
//! 90 or more is a match, 50 to 89 goes to an officer, less is no match. A missing surname, a
//! display name without any given name or initial, and given names that all disagree are no
//! match whatever the points.

use std::fmt;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Minimum score that counts as a match.
pub const MATCH_THRESHOLD: u8 = 90;

/// Minimum score that goes to an officer for review instead of being rejected.
pub const REVIEW_THRESHOLD: u8 = 50;

/// Titles and post-nominal letters left out of the comparison.
const TITLES: &[&str] = &[
    "dr",
    "drs",
    "dhr",
    "mevr",
    "mw",
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "prof",
    "professor",
    "pr",
    "ir",
    "ing",
    "md",
    "phd",
    "msc",
    "bsc",
    "mbbs",
    "mbchb",
    "frcp",
    "frcs",
    "mrcp",
    "mrcgp",
    "docteur",
    "mme",
    "mlle",
    "sir",
    "dame",
    "arts",
];

/// Surname prefixes (Dutch, French, German, Italian, Spanish, Portuguese) left out of the
/// comparison.
const PARTICLES: &[&str] = &[
    "van", "de", "der", "den", "het", "t", "ter", "ten", "te", "op", "in", "uit", "aan", "bij",
    "von", "vom", "zu", "zum", "le", "la", "les", "du", "des", "d", "l", "di", "da", "dos", "das",
    "del", "della", "dei",
];

/// The outcome of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Match,
    /// Close but not certain: an officer decides.
    Ambiguous,
    NoMatch,
}

/// The result of comparing two names, with the reasons in plain words for the officers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameMatch {
    pub score: u8,
    pub outcome: Outcome,
    pub reasons: Vec<String>,
}

impl fmt::Display for NameMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "score {}/100: {}", self.score, self.reasons.join("; "))
    }
}

/// A name as a register lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterName {
    /// Given names or initials, such as "J.H." or "Jean-Pierre".
    pub given_names: String,
    /// The surname with its prefix, such as "van der Berg".
    pub surname: String,
}

impl RegisterName {
    /// Splits a full name held in one cell: "Surname, Given" when there is a comma, else the
    /// last word that is not a prefix is the surname and the prefixes before it belong to it.
    pub fn from_full_name(full: &str) -> Self {
        if let Some((surname, given)) = full.split_once(',') {
            return Self {
                given_names: given.trim().to_owned(),
                surname: surname.trim().to_owned(),
            };
        }
        let words: Vec<&str> = full.split_whitespace().collect();
        let Some(last) = words.len().checked_sub(1) else {
            return Self::default();
        };
        let mut start = last;
        while start > 1 && is_particle_word(words[start - 1]) {
            start -= 1;
        }
        Self { given_names: words[..start].join(" "), surname: words[start..].join(" ") }
    }

    /// Returns the name as people write it, given names first.
    pub fn display(&self) -> String {
        match (self.given_names.is_empty(), self.surname.is_empty()) {
            (false, false) => format!("{} {}", self.given_names, self.surname),
            (true, _) => self.surname.clone(),
            (false, true) => self.given_names.clone(),
        }
    }
}

fn is_particle_word(word: &str) -> bool {
    let words = words(word);
    !words.is_empty() && words.iter().all(|word| PARTICLES.contains(&word.as_str()))
}

/// Compares the display name of an account with a register entry's name.
pub fn compare(display_name: &str, register: &RegisterName) -> NameMatch {
    let mut reasons = Vec::new();
    let mut display = core(words(display_name));
    let surname_words = words(&register.surname);
    let surname = core(surname_words.clone());
    let given = core(words(&register.given_names));

    // The surname: every word of it should be in the display name.
    let joined_surname: String = surname_words.concat();
    let surname_points = if let Some(at) =
        display.iter().position(|word| surname_words.len() > 1 && *word == joined_surname)
    {
        // Written as one word, such as "vandenberg" for "van den Berg".
        display.remove(at);
        reasons.push("surname matches".to_owned());
        60
    } else {
        let (mut exact, mut typo, mut missing) = (0, 0, 0);
        for word in &surname {
            if let Some(at) = display.iter().position(|candidate| candidate == word) {
                display.remove(at);
                exact += 1;
            } else if let Some(at) = display.iter().position(|candidate| one_typo(candidate, word))
            {
                display.remove(at);
                typo += 1;
            } else {
                missing += 1;
            }
        }
        match (exact, typo, missing) {
            (0, 0, _) => {
                reasons.push(format!("surname \"{}\" is missing", register.surname));
                0
            }
            (_, 0, 0) => {
                reasons.push("surname matches".to_owned());
                60
            }
            (_, _, 0) => {
                reasons.push("surname matches with a typo".to_owned());
                40
            }
            _ => {
                reasons.push(format!("only part of the surname \"{}\" matches", register.surname));
                40
            }
        }
    };

    // The given names: what is left of the display name, against the entry's given names.
    let mut no_match = surname_points == 0;
    let mut given_points: i32 = 0;
    if display.is_empty() {
        reasons.push("the display name has no given name or initial".to_owned());
        no_match = true;
    } else if given.is_empty() {
        reasons.push("the register lists no given names".to_owned());
        given_points = 20;
    } else {
        let mut unused = given.clone();
        let mut best = GivenMatch::None;
        let mut unmatched = 0;
        for word in &display {
            let found = unused
                .iter()
                .enumerate()
                .map(|(at, candidate)| (at, GivenMatch::of(word, candidate)))
                .max_by_key(|(_, quality)| quality.points());
            match found {
                Some((at, quality)) if quality != GivenMatch::None => {
                    unused.remove(at);
                    best = best.max(quality);
                }
                _ => unmatched += 1,
            }
        }
        reasons.push(best.reason().to_owned());
        if best == GivenMatch::None {
            no_match = true;
        } else {
            given_points = best.points() - 10 * unmatched;
            if unmatched > 0 {
                reasons
                    .push(format!("{unmatched} word(s) of the display name are not in the entry"));
            }
        }
    }

    let score = (surname_points + given_points).clamp(0, 100) as u8;
    let outcome = if no_match || score < REVIEW_THRESHOLD {
        Outcome::NoMatch
    } else if score >= MATCH_THRESHOLD {
        Outcome::Match
    } else {
        Outcome::Ambiguous
    };
    NameMatch { score, outcome, reasons }
}

/// The match between one given name of the display name and one of the entry, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum GivenMatch {
    None,
    SameInitial,
    Typo,
    Initial,
    Full,
}

impl GivenMatch {
    fn of(display: &str, register: &str) -> Self {
        let initial = |word: &str| word.chars().next();
        if display == register {
            if display.chars().count() == 1 {
                Self::Initial
            } else {
                Self::Full
            }
        } else if initial(display) != initial(register) {
            Self::None
        } else if display.chars().count() == 1 || register.chars().count() == 1 {
            Self::Initial
        } else if display.chars().count() >= 5 && one_typo(display, register) {
            Self::Typo
        } else {
            Self::SameInitial
        }
    }

    fn points(self) -> i32 {
        match self {
            Self::None => 0,
            Self::SameInitial => 10,
            Self::Typo => 25,
            Self::Initial => 30,
            Self::Full => 40,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::None => "the given names differ",
            Self::SameInitial => "the given names differ but share their initial",
            Self::Typo => "a given name matches with a typo",
            Self::Initial => "a given name matches by its initial",
            Self::Full => "a given name matches",
        }
    }
}

/// Splits a name into lowercase words without accents, titles or punctuation.
pub fn words(name: &str) -> Vec<String> {
    let folded = fold(name);
    let mut words = Vec::new();
    for raw in folded.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        // French elision ("d'Artagnan", "l'Hermite") separates a particle; other apostrophes
        // ("O'Brien", "'t Hart") are part of the word.
        let raw = raw.trim_matches('\'');
        let parts: Vec<&str> = match raw.split_once('\'') {
            Some((particle @ ("d" | "l"), rest)) => vec![particle, rest],
            _ => vec![raw],
        };
        for part in parts {
            let word: String = part.chars().filter(|c| *c != '\'').collect();
            if !word.is_empty() && !TITLES.contains(&word.as_str()) {
                words.push(word);
            }
        }
    }
    words
}

/// Drops surname prefixes, unless nothing else is left.
fn core(words: Vec<String>) -> Vec<String> {
    let core: Vec<String> =
        words.iter().filter(|word| !PARTICLES.contains(&word.as_str())).cloned().collect();
    if core.is_empty() {
        words
    } else {
        core
    }
}

/// Lowercases and removes accents, folding letters that have no decomposition.
fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for character in text.nfd().filter(|c| !is_combining_mark(*c)) {
        match character {
            'ß' => folded.push_str("ss"),
            'æ' | 'Æ' => folded.push_str("ae"),
            'œ' | 'Œ' => folded.push_str("oe"),
            'ø' | 'Ø' => folded.push('o'),
            'ł' | 'Ł' => folded.push('l'),
            'đ' | 'Đ' | 'ð' | 'Ð' => folded.push('d'),
            'þ' | 'Þ' => folded.push_str("th"),
            'ı' => folded.push('i'),
            'ĳ' | 'Ĳ' => folded.push_str("ij"),
            '’' | '‘' | '`' | '´' => folded.push('\''),
            other => folded.extend(other.to_lowercase()),
        }
    }
    folded
}

/// Checks whether two words differ by at most one edit (insertion, deletion, substitution or the swap
/// of two neighbours), for words long enough that one edit is a typo and not another name.
fn one_typo(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().min(b.len()) < 4 || a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    edit_distance(&a, &b) <= 1
}

/// Returns the optimal string alignment distance between two words.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let width = b.len() + 1;
    let mut rows = vec![0usize; (a.len() + 1) * width];
    for (i, row) in rows.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[(i - 1) * width + j] + 1)
                .min(rows[i * width + j - 1] + 1)
                .min(rows[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[(i - 2) * width + j - 2] + 1);
            }
            rows[i * width + j] = best;
        }
    }
    rows[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(given_names: &str, surname: &str) -> RegisterName {
        RegisterName { given_names: given_names.to_owned(), surname: surname.to_owned() }
    }

    fn outcome(display: &str, given: &str, surname: &str) -> Outcome {
        compare(display, &entry(given, surname)).outcome
    }

    #[track_caller]
    fn check(cases: &[(&str, &str, &str, Outcome)]) {
        for (display, given, surname, expected) in cases {
            let result = compare(display, &entry(given, surname));
            assert_eq!(
                result.outcome, *expected,
                "{display:?} against {given:?} {surname:?}: {result}"
            );
        }
    }

    #[test]
    fn dutch_names() {
        use Outcome::*;
        check(&[
            ("Jan de Vries", "Jan", "de Vries", Match),
            ("J. de Vries", "Jan", "de Vries", Match),
            ("Jan de Vries", "J.H.", "de Vries", Match),
            ("J.H. de Vries", "J.H.", "de Vries", Match),
            ("jan DE VRIES", "Jan", "de Vries", Match),
            ("De Vries, Jan", "Jan", "de Vries", Match),
            ("Vries, J. de", "Jan", "de Vries", Match),
            ("Jan Vries", "Jan", "de Vries", Match),
            ("Dr. Jan de Vries", "Jan", "de Vries", Match),
            ("drs. P. van den Berg", "Pieter", "van den Berg", Match),
            ("Pieter Vandenberg", "Pieter", "van den Berg", Match),
            ("Anna ter Horst", "A.M.", "ter Horst", Match),
            ("Wilhelmina van 't Hof", "Wilhelmina", "van 't Hof", Match),
            ("Sanne van der Meer-Bakker", "Sanne", "van der Meer-Bakker", Match),
            ("Sanne van der Meer", "Sanne", "van der Meer-Bakker", Ambiguous),
            ("Johannes de Vries", "Jan", "de Vries", Ambiguous),
            ("Jan de Vris", "Jan", "de Vries", Ambiguous),
            ("Pieter de Vries", "Jan", "de Vries", NoMatch),
            ("Jan de Graaf", "Jan", "de Vries", NoMatch),
            ("Dr. de Vries", "Jan", "de Vries", NoMatch),
            ("", "Jan", "de Vries", NoMatch),
        ]);
    }

    #[test]
    fn french_names() {
        use Outcome::*;
        check(&[
            ("Amélie Lefèvre", "Amelie", "LEFEVRE", Match),
            ("AMELIE LEFEVRE", "Amélie", "Lefèvre", Match),
            ("Élodie Martin", "ELODIE", "MARTIN", Match),
            ("Jean-Pierre Le Gall", "Jean-Pierre", "Le Gall", Match),
            ("J.-P. Le Gall", "Jean-Pierre", "LE GALL", Match),
            ("Jean-Pierre Gall", "Jean-Pierre", "Le Gall", Match),
            ("Marie d'Artagnan", "Marie", "D'ARTAGNAN", Match),
            ("François Lhermite", "François", "L'Hermite", Match),
            ("Dr Hélène Dupont-Martin", "Hélène", "Dupont-Martin", Match),
            ("Hélène Dupont", "Hélène", "Dupont-Martin", Ambiguous),
            ("Jacques Moreau", "Jaques", "Moreau", Ambiguous),
            ("Mme Claire Moreau", "Sophie", "Moreau", NoMatch),
            ("Claire Bernard", "Claire", "Moreau", NoMatch),
        ]);
    }

    #[test]
    fn british_names() {
        use Outcome::*;
        check(&[
            ("Sarah O'Connor", "Sarah Jane", "O'CONNOR", Match),
            ("Dr Sarah OConnor", "Sarah", "O'Connor", Match),
            ("Smith, John A.", "John Andrew", "SMITH", Match),
            ("John Andrew Smith MBBS", "John", "Smith", Match),
            ("J A Smith", "John Andrew", "Smith", Match),
            ("Mohammed Khan", "Muhammad", "KHAN", Ambiguous),
            ("Imran Khan", "", "KHAN", Ambiguous),
            ("Khan", "Imran", "Khan", NoMatch),
            ("Emily Clarke", "Emily", "Clark", Ambiguous),
            ("Emily Brown", "Emily", "Clark", NoMatch),
            ("Siobhán Ní Bhriain", "Siobhan", "Ni Bhriain", Match),
        ]);
    }

    #[test]
    fn other_letters_and_order() {
        use Outcome::*;
        check(&[
            ("Jürgen Weiß", "Jurgen", "Weiss", Match),
            ("Søren Kærgaard", "Soren", "Kaergaard", Match),
            ("Łukasz Nowak", "Lukasz", "Nowak", Match),
            ("Nowak Łukasz", "Łukasz", "NOWAK", Match),
            ("Ludwig von Beethoven", "Ludwig", "van Beethoven", Match),
        ]);
    }

    #[test]
    fn scores_follow_the_table() {
        assert_eq!(compare("Jan de Vries", &entry("Jan", "de Vries")).score, 100);
        assert_eq!(compare("J. de Vries", &entry("Jan", "de Vries")).score, 90);
        assert_eq!(compare("Johannes de Vries", &entry("Jan", "de Vries")).score, 70);
        assert_eq!(compare("Jan de Vris", &entry("Jan", "de Vries")).score, 80);
        assert_eq!(compare("Jan Peter de Vries", &entry("Jan", "de Vries")).score, 90);
        let result = compare("Johannes de Vries", &entry("Jan", "de Vries"));
        assert!(result.to_string().contains("share their initial"), "{result}");
    }

    #[test]
    fn full_names_in_one_cell_are_split() {
        assert_eq!(RegisterName::from_full_name("Jan de Vries"), entry("Jan", "de Vries"));
        assert_eq!(RegisterName::from_full_name("de Vries, Jan"), entry("Jan", "de Vries"));
        assert_eq!(
            RegisterName::from_full_name("Pieter van den Berg"),
            entry("Pieter", "van den Berg")
        );
        assert_eq!(RegisterName::from_full_name("Smith"), entry("", "Smith"));
        assert_eq!(RegisterName::from_full_name(""), entry("", ""));
        assert_eq!(outcome("P. van den Berg", "Pieter", "van den Berg"), Outcome::Match);
        assert_eq!(outcome("J. van den Berg", "Pieter", "van den Berg"), Outcome::NoMatch);
    }

    #[test]
    fn words_drop_accents_titles_and_punctuation() {
        assert_eq!(words("Dr. Jean-Pierre LE GALL"), ["jean", "pierre", "le", "gall"]);
        assert_eq!(words("Prof. dr. Zoë d’Hondt"), ["zoe", "d", "hondt"]);
        assert_eq!(words("  "), Vec::<String>::new());
        assert_eq!(edit_distance(&['a', 'b'], &['b', 'a']), 1);
        assert!(one_typo("vries", "vreis"));
        assert!(!one_typo("jan", "jon"));
    }
}
