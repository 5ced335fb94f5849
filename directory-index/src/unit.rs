//! One unit of a free-text query (a word, or a multi-word vocabulary name) with the alternative
//! ways it can match, each with a score. A document gets the best score among the alternatives
//! it matches, as with tantivy's `DisjunctionMaxQuery`.
//!
//! Units are intersected, and a lazy union has to be advanced in step with the other units, which
//! dominated query time on a million entries. Here each segment's alternatives are read once,
//! block by block, into one bit set per score: that is about a nanosecond per posting, after which
//! the intersection seeks in bit sets at almost no cost. Prefix and fuzzy alternatives read every
//! matching posting in any case, as tantivy's automaton queries do.

use std::fmt;
use std::sync::Arc;

use tantivy::postings::BlockSegmentPostings;
use tantivy::query::{BitSetDocSet, DfaWrapper, EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{BitSet, DocId, DocSet, Score, SegmentReader, TantivyError, Term, TERMINATED};

/// The documents an alternative matches.
pub(crate) enum Source {
    /// Documents with this term.
    Term(Term),
    /// Documents with a term of the field that the automaton accepts.
    Automaton(Field, Arc<DfaWrapper>),
    /// Documents matching a query; its own scores are ignored.
    Query(Box<dyn Query>),
}

impl Clone for Source {
    fn clone(&self) -> Self {
        match self {
            Self::Term(term) => Self::Term(term.clone()),
            Self::Automaton(field, automaton) => Self::Automaton(*field, Arc::clone(automaton)),
            Self::Query(query) => Self::Query(query.box_clone()),
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Term(term) => write!(formatter, "Term({term:?})"),
            Self::Automaton(field, _) => write!(formatter, "Automaton({field:?})"),
            Self::Query(query) => write!(formatter, "Query({query:?})"),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct UnitQuery {
    alternatives: Vec<(Source, Score)>,
}

impl UnitQuery {
    pub(crate) fn new(alternatives: Vec<(Source, Score)>) -> Self {
        Self { alternatives }
    }
}

enum WeightSource {
    Term(Term),
    Automaton(Field, Arc<DfaWrapper>),
    Weight(Box<dyn Weight>),
}

impl Query for UnitQuery {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let mut alternatives = Vec::with_capacity(self.alternatives.len());
        for (source, score) in &self.alternatives {
            let source = match source {
                Source::Term(term) => WeightSource::Term(term.clone()),
                Source::Automaton(field, automaton) => {
                    WeightSource::Automaton(*field, Arc::clone(automaton))
                }
                Source::Query(query) => {
                    let unscored = EnableScoring::disabled_from_schema(enable_scoring.schema());
                    WeightSource::Weight(query.weight(unscored)?)
                }
            };
            alternatives.push((source, *score));
        }
        // Highest score first, which is the order `UnitScorer::score` checks.
        alternatives.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(Box::new(UnitWeight { alternatives }))
    }
}

struct UnitWeight {
    alternatives: Vec<(WeightSource, Score)>,
}

fn insert_postings(mut postings: BlockSegmentPostings, tier: &mut BitSet, all: &mut BitSet) {
    loop {
        let docs = postings.docs();
        if docs.is_empty() {
            break;
        }
        for &doc in docs {
            tier.insert(doc);
            all.insert(doc);
        }
        postings.advance();
    }
}

impl Weight for UnitWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let max_doc = reader.max_doc();
        let mut all = BitSet::with_max_value(max_doc);
        let mut tiers: Vec<(Score, BitSet)> = Vec::new();

        for (source, score) in &self.alternatives {
            if tiers.last().is_none_or(|(last, _)| last != score) {
                tiers.push((*score, BitSet::with_max_value(max_doc)));
            }
            let Some((_, tier)) = tiers.last_mut() else {
                continue;
            };
            match source {
                WeightSource::Term(term) => {
                    let inverted_index = reader.inverted_index(term.field())?;
                    if let Some(postings) =
                        inverted_index.read_block_postings(term, IndexRecordOption::Basic)?
                    {
                        insert_postings(postings, tier, &mut all);
                    }
                }
                WeightSource::Automaton(field, automaton) => {
                    let inverted_index = reader.inverted_index(*field)?;
                    let mut terms =
                        inverted_index.terms().search(automaton.as_ref()).into_stream()?;
                    while terms.advance() {
                        let postings = inverted_index.read_block_postings_from_terminfo(
                            terms.value(),
                            IndexRecordOption::Basic,
                        )?;
                        insert_postings(postings, tier, &mut all);
                    }
                }
                WeightSource::Weight(weight) => {
                    weight.for_each_no_score(reader, &mut |docs| {
                        for &doc in docs {
                            tier.insert(doc);
                            all.insert(doc);
                        }
                    })?;
                }
            }
        }

        Ok(Box::new(UnitScorer { docs: BitSetDocSet::from(all), tiers, boost }))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(TantivyError::InvalidArgument(format!("document {doc} does not match")));
        }
        Ok(Explanation::new("best matching alternative", scorer.score()))
    }
}

struct UnitScorer {
    docs: BitSetDocSet,
    /// Matches per score, the highest score first.
    tiers: Vec<(Score, BitSet)>,
    boost: Score,
}

impl DocSet for UnitScorer {
    fn advance(&mut self) -> DocId {
        self.docs.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        self.docs.seek(target)
    }

    fn doc(&self) -> DocId {
        self.docs.doc()
    }

    fn size_hint(&self) -> u32 {
        self.docs.size_hint()
    }
}

impl Scorer for UnitScorer {
    fn score(&mut self) -> Score {
        let doc = self.docs.doc();
        if doc == TERMINATED {
            return 0.0;
        }
        let best = self.tiers.iter().find(|(_, tier)| tier.contains(doc));
        best.map_or(0.0, |(score, _)| score * self.boost)
    }
}
