//! Text analysis shared by indexing, querying and the vocabulary, so that all three fold words the
//! same way. Text is split on anything that is not a letter or digit, lowercased, and accents and
//! ligatures are folded to ASCII ("Kardiologie" → "kardiologie", "cardiólogo" → "cardiologo",
//! "Gefäßchirurgie" → "gefasschirurgie").

use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
    TokenizerManager,
};

/// Tokenizer of the free-text fields: words, lowercased and folded.
pub(crate) const WORDS_TOKENIZER: &str = "caduceus_words";
/// Tokenizer of the filter fields: the whole value as one term, lowercased and folded, so that a
/// filter on "utrecht" matches "Utrecht".
pub(crate) const KEYWORD_TOKENIZER: &str = "caduceus_keyword";

/// Words longer than this many bytes are dropped; no name or place needs them, and very long
/// terms only make fuzzy automatons expensive.
const MAX_WORD_BYTES: usize = 40;

pub(crate) fn words_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

fn keyword_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(RawTokenizer::default())
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// Registers the analyzers above under the names the schema refers to.
pub(crate) fn register_tokenizers(manager: &TokenizerManager) {
    manager.register(WORDS_TOKENIZER, words_analyzer());
    manager.register(KEYWORD_TOKENIZER, keyword_analyzer());
}

/// Splits `text` into folded words.
pub(crate) fn words(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut stream = analyzer.token_stream(text);
    stream.process(&mut |token| words.push(token.text.clone()));
    words
}

/// Folds a whole value the way the keyword fields index it.
pub(crate) fn fold_keyword(text: &str) -> String {
    let mut analyzer = keyword_analyzer();
    let mut folded = String::new();
    let mut stream = analyzer.token_stream(text.trim());
    stream.process(&mut |token| folded.push_str(&token.text));
    folded
}

/// Words that only decorate a query ("dr jansen", "cardiologist in utrecht") and would otherwise
/// have to match something in every result.
pub(crate) fn is_filler_word(word: &str) -> bool {
    matches!(
        word,
        // titles
        "dr" | "drs" | "prof" | "mr" | "mrs" | "ms" | "mw" | "dhr" | "mevr" | "mme" | "pr"
        // connectors in English, Dutch, French and German
        | "in" | "at" | "near" | "and" | "the" | "bij" | "te" | "nabij" | "en"
        | "a" | "pres" | "dans" | "et" | "bei" | "nahe" | "und" | "im"
    )
}

/// Returns the edit distance a fuzzy match of `word` may have: none for short words and words with digits
/// (postal codes), 1 up to seven characters, 2 from eight characters on. Counting characters, not
/// bytes, keeps the rule the same for folded and unfolded input.
pub(crate) fn fuzzy_distance(word: &str) -> u8 {
    if word.chars().any(|c| c.is_ascii_digit()) {
        return 0;
    }
    match word.chars().count() {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// Optimal string alignment distance between two words: insertions, deletions, substitutions and
/// swaps of two neighbouring characters each cost 1. It matches what tantivy's Levenshtein
/// automatons compute with `transposition_cost_one`, and stops early once the distance exceeds
/// `max`, returning `max + 1`.
pub(crate) fn edit_distance(a: &str, b: &str, max: u8) -> u8 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let max = usize::from(max);
    if a.len().abs_diff(b.len()) > max {
        return (max + 1) as u8;
    }

    // Three rows of the dynamic programming table: two back, one back, current.
    let mut two_back: Vec<usize> = vec![0; b.len() + 1];
    let mut one_back: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        let mut row_min = current[0];
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut cell =
                (one_back[j] + 1).min(current[j - 1] + 1).min(one_back[j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cell = cell.min(two_back[j - 2] + 1);
            }
            current[j] = cell;
            row_min = row_min.min(cell);
        }
        if row_min > max {
            return (max + 1) as u8;
        }
        std::mem::swap(&mut two_back, &mut one_back);
        std::mem::swap(&mut one_back, &mut current);
    }
    one_back[b.len()].min(max + 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_folded_across_languages() {
        let mut analyzer = words_analyzer();
        assert_eq!(words(&mut analyzer, "Kardiologie"), ["kardiologie"]);
        assert_eq!(words(&mut analyzer, "cardiólogo"), ["cardiologo"]);
        assert_eq!(words(&mut analyzer, "Gefäßchirurgie"), ["gefasschirurgie"]);
        assert_eq!(words(&mut analyzer, "médecine d'urgence"), ["medecine", "d", "urgence"]);
        assert_eq!(words(&mut analyzer, "Jansen-de Vries"), ["jansen", "de", "vries"]);
    }

    #[test]
    fn keyword_keeps_whole_value() {
        assert_eq!(fold_keyword(" Den Haag "), "den haag");
        assert_eq!(fold_keyword("Köln"), "koln");
    }

    #[test]
    fn fuzzy_distance_grows_with_length() {
        assert_eq!(fuzzy_distance("jan"), 0);
        assert_eq!(fuzzy_distance("3511"), 0);
        assert_eq!(fuzzy_distance("jansen"), 1);
        assert_eq!(fuzzy_distance("kardiolog"), 2);
    }

    #[test]
    fn edit_distance_counts_swaps_once() {
        assert_eq!(edit_distance("jansen", "jansen", 2), 0);
        assert_eq!(edit_distance("jansen", "jasnen", 2), 1);
        assert_eq!(edit_distance("kardiolog", "kardiologie", 2), 2);
        assert_eq!(edit_distance("kardiolog", "cardiologist", 2), 3);
        assert_eq!(edit_distance("", "abc", 2), 3);
        assert_eq!(edit_distance("abc", "", 5), 3);
    }
}
