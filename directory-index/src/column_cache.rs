//! The columns the collector reads per match (facet values and coordinates), decoded into plain
//! arrays per segment.
//!
//! Reading a multi-valued tantivy column costs several lookups per document, which made counting
//! four facets, or checking a radius, the larger part of a filtered search with a hundred thousand
//! matches. Segments never change once written, so each is decoded once: by the reader's warmer
//! when a commit or a merge brings in a new segment, or by the first search that needs it. Memory:
//! about 4 bytes per entry per facet dimension and 8 bytes for coordinates (36 MB for a million
//! entries), plus the rare extra values.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tantivy::columnar::StrColumn;
use tantivy::index::SegmentId;
use tantivy::{BitSet, DocId, Searcher, SearcherGeneration, SegmentReader, Warmer};

use crate::schema::names;
use crate::search::FacetDimension;

/// Marks a document without a value in [`Decoded::first`].
pub(crate) trait NoValue: Copy + PartialEq {
    const NO_VALUE: Self;
}

impl NoValue for u32 {
    const NO_VALUE: Self = u32::MAX;
}

// `geo::pack` never returns this value.
impl NoValue for u64 {
    const NO_VALUE: Self = u64::MAX;
}

pub(crate) fn column_name(dimension: FacetDimension) -> &'static str {
    match dimension {
        FacetDimension::Specialty => names::SPECIALTY,
        FacetDimension::Profession => names::PROFESSION,
        FacetDimension::Organisation => names::ORGANISATION,
        FacetDimension::City => names::CITY,
        FacetDimension::Region => names::REGION,
        FacetDimension::Country => names::COUNTRY,
        FacetDimension::Level => names::LEVEL,
    }
}

/// The values of one column of one segment: the first value of each document in an array, the
/// rare further values in a map.
pub(crate) struct Decoded<T> {
    first: Vec<T>,
    /// Documents with more than one value.
    has_more: BitSet,
    more: HashMap<DocId, Vec<T>>,
}

impl<T: NoValue> Decoded<T> {
    fn decode<I: Iterator<Item = T>>(max_doc: u32, mut values_of: impl FnMut(DocId) -> I) -> Self {
        let mut first = vec![T::NO_VALUE; max_doc as usize];
        let mut has_more = BitSet::with_max_value(max_doc);
        let mut more = HashMap::new();
        for doc in 0..max_doc {
            let mut values = values_of(doc);
            let Some(value) = values.next() else {
                continue;
            };
            first[doc as usize] = value;
            let rest: Vec<T> = values.collect();
            if !rest.is_empty() {
                has_more.insert(doc);
                more.insert(doc, rest);
            }
        }
        Self { first, has_more, more }
    }

    /// Calls `f` with each value of `doc`.
    #[inline]
    pub fn for_each(&self, doc: DocId, mut f: impl FnMut(T)) {
        let first = self.first[doc as usize];
        if first == T::NO_VALUE {
            return;
        }
        f(first);
        if self.has_more.contains(doc) {
            if let Some(rest) = self.more.get(&doc) {
                rest.iter().copied().for_each(f);
            }
        }
    }
}

/// A facet column: value ordinals per document, and the column for its dictionary of values.
pub(crate) struct FacetColumn {
    pub column: StrColumn,
    pub ords: Decoded<u32>,
}

impl FacetColumn {
    pub fn num_terms(&self) -> usize {
        self.column.num_terms()
    }
}

/// The decoded columns of one segment.
#[derive(Default)]
pub(crate) struct SegmentColumns {
    /// Columns in the order of [`FacetDimension::ALL`], with `None` when no document of the
    /// segment has a value.
    facets: Vec<Option<FacetColumn>>,
    /// Packed coordinates, see [`crate::geo`].
    pub geo: Option<Decoded<u64>>,
}

impl SegmentColumns {
    fn decode(reader: &SegmentReader) -> tantivy::Result<Self> {
        let fast_fields = reader.fast_fields();
        let max_doc = reader.max_doc();
        let mut facets = Vec::with_capacity(FacetDimension::ALL.len());
        for dimension in FacetDimension::ALL {
            let column = fast_fields.str(column_name(dimension))?;
            facets.push(column.map(|column| {
                // Dictionaries of a segment hold far fewer than 2^32 values.
                let ords =
                    Decoded::decode(max_doc, |doc| column.term_ords(doc).map(|ord| ord as u32));
                FacetColumn { column, ords }
            }));
        }
        let geo = fast_fields.column_opt::<u64>(names::GEO)?;
        let geo = geo.map(|column| Decoded::decode(max_doc, |doc| column.values_for_doc(doc)));
        Ok(Self { facets, geo })
    }

    pub fn facet(&self, dimension: FacetDimension) -> Option<&FacetColumn> {
        let index = FacetDimension::ALL.iter().position(|known| *known == dimension)?;
        self.facets.get(index)?.as_ref()
    }
}

#[derive(Default)]
pub(crate) struct ColumnCache {
    segments: RwLock<HashMap<SegmentId, Arc<SegmentColumns>>>,
}

impl ColumnCache {
    /// Returns the decoded columns of a segment, decoding them on first use.
    pub fn segment(&self, reader: &SegmentReader) -> tantivy::Result<Arc<SegmentColumns>> {
        let segment_id = reader.segment_id();
        {
            let segments = self.segments.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(columns) = segments.get(&segment_id) {
                return Ok(Arc::clone(columns));
            }
        }
        // Decoded outside the lock; two searches racing on a new segment both decode it, and
        // the second insert wins, which is harmless.
        let columns = Arc::new(SegmentColumns::decode(reader)?);
        let mut segments = self.segments.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        segments.insert(segment_id, Arc::clone(&columns));
        Ok(columns)
    }
}

impl Warmer for ColumnCache {
    fn warm(&self, searcher: &Searcher) -> tantivy::Result<()> {
        for reader in searcher.segment_readers() {
            self.segment(reader)?;
        }
        Ok(())
    }

    fn garbage_collect(&self, live_generations: &[&SearcherGeneration]) {
        let mut segments = self.segments.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        segments.retain(|segment_id, _| {
            live_generations.iter().any(|generation| generation.segments().contains_key(segment_id))
        });
    }
}
