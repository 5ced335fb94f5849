//! One pass over the matching documents that applies the exact radius check, counts the total
//! and the facets, and keeps the best page of hits after the cursor.
//!
//! Hits are ordered by score descending, then by user ID ascending. Within a segment the user ID
//! column's term ordinals sort like the user IDs themselves, so the segment collectors compare
//! ordinals and only the kept hits have their user IDs read back.
//!
//! Segments are sorted by user ID (see `index_settings` in the index module), so documents arrive
//! in user ID order. Once a segment's page is full of hits that have the highest score the query
//! allows, no later document can displace one, and the segment stops early if the request does
//! not need the exact total or facet counts.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn, TermOrdHit};
use tantivy::index::SegmentReader;
use tantivy::query::Weight;
use tantivy::{DocAddress, DocId, DocSet, Score, SegmentOrdinal, TantivyError, TERMINATED};

use crate::column_cache::{ColumnCache, SegmentColumns};
use crate::cursor::Cursor;
use crate::geo;
use crate::schema::names;
use crate::search::{FacetDimension, GeoRadius};

pub(crate) struct HitCollector {
    /// Number of hits to keep: the page size plus one, to know whether another page follows.
    pub keep: usize,
    pub after: Option<Cursor>,
    pub near: Option<GeoRadius>,
    pub facets: Vec<FacetDimension>,
    /// When set, a segment stops once its kept hits all have this score (see the module
    /// documentation).
    pub stop_at_score: Option<Score>,
    pub column_cache: Arc<ColumnCache>,
}

#[derive(Clone, Debug)]
pub(crate) struct CollectedHit {
    pub score: Score,
    pub user_id: String,
    pub address: DocAddress,
    pub distance_km: Option<f64>,
}

pub(crate) struct Collected {
    pub hits: Vec<CollectedHit>,
    pub total: u64,
    /// False when a segment stopped early, so `total` only counts the matches seen.
    pub total_is_exact: bool,
    pub facets: Vec<(FacetDimension, HashMap<String, u64>)>,
}

/// A kept hit within one segment. Ordered so that the worst hit is the greatest, which puts it
/// on top of the max-heap where it is the one replaced.
#[derive(Clone, Copy, Debug)]
struct SegmentHit {
    score: Score,
    user_id_ord: u64,
    doc: DocId,
    distance_km: Option<f64>,
}

impl PartialEq for SegmentHit {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SegmentHit {}

impl PartialOrd for SegmentHit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SegmentHit {
    fn cmp(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then(self.user_id_ord.cmp(&other.user_id_ord))
    }
}

/// The position of the cursor within one segment.
#[derive(Clone, Copy)]
struct SegmentCursor {
    score: Score,
    /// The first user ID ordinal after the cursor's user ID.
    first_ord_after: u64,
}

struct FacetCounter {
    dimension: FacetDimension,
    counts: Vec<u32>,
}

pub(crate) struct HitSegmentCollector {
    segment_ord: SegmentOrdinal,
    keep: usize,
    user_ids: StrColumn,
    user_id_ords: Column<u64>,
    after: Option<SegmentCursor>,
    near: Option<GeoRadius>,
    columns: Arc<SegmentColumns>,
    /// The score at which a full page ends the segment early.
    stop_at_score: Option<Score>,
    heap: BinaryHeap<SegmentHit>,
    total: u64,
    stopped_early: bool,
    facets: Vec<FacetCounter>,
}

pub(crate) struct SegmentCollected {
    hits: Vec<CollectedHit>,
    total: u64,
    stopped_early: bool,
    facets: Vec<(FacetDimension, Vec<(String, u64)>)>,
}

impl Collector for HitCollector {
    type Fruit = Collected;
    type Child = HitSegmentCollector;

    fn for_segment(
        &self,
        segment_ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<HitSegmentCollector> {
        let fast_fields = reader.fast_fields();
        let user_ids = fast_fields.str(names::USER_ID)?.ok_or_else(|| {
            TantivyError::SchemaError("the user_id fast column is missing".to_owned())
        })?;
        let user_id_ords = user_ids.ords().clone();

        let after = match &self.after {
            None => None,
            Some(cursor) => {
                let first_ord_after =
                    match user_ids.dictionary().term_ord_or_next(&cursor.user_id)? {
                        TermOrdHit::Exact(ord) => ord + 1,
                        TermOrdHit::Next(ord) => ord,
                    };
                Some(SegmentCursor { score: cursor.score, first_ord_after })
            }
        };

        let columns = if self.facets.is_empty() && self.near.is_none() {
            Arc::new(SegmentColumns::default())
        } else {
            self.column_cache.segment(reader)?
        };
        let mut facets = Vec::with_capacity(self.facets.len());
        for &dimension in &self.facets {
            if let Some(column) = columns.facet(dimension) {
                facets.push(FacetCounter { dimension, counts: vec![0; column.num_terms()] });
            }
        }

        // After a cursor, no document can score above the cursor's score.
        let stop_at_score = self.stop_at_score.map(|score| match &self.after {
            Some(cursor) => score.min(cursor.score),
            None => score,
        });

        Ok(HitSegmentCollector {
            segment_ord,
            keep: self.keep,
            user_ids,
            user_id_ords,
            after,
            near: self.near,
            columns,
            stop_at_score,
            heap: BinaryHeap::with_capacity(self.keep + 1),
            total: 0,
            stopped_early: false,
            facets,
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment_ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentCollected> {
        let mut collector = self.for_segment(segment_ord, reader)?;
        let alive = reader.alive_bitset();
        if collector.stop_at_score.is_none() {
            // Without early stops, tantivy's own loop is faster than stepping the scorer.
            weight.for_each(reader, &mut |doc, score| {
                if alive.is_none_or(|alive| alive.is_alive(doc)) {
                    collector.collect(doc, score);
                }
            })?;
            return Ok(collector.harvest());
        }

        let mut scorer = weight.scorer(reader, 1.0)?;
        let mut doc = scorer.doc();
        while doc != TERMINATED {
            if alive.is_none_or(|alive| alive.is_alive(doc)) {
                collector.collect(doc, scorer.score());
                if collector.is_saturated() {
                    collector.stopped_early = true;
                    break;
                }
            }
            doc = scorer.advance();
        }
        Ok(collector.harvest())
    }

    fn merge_fruits(&self, segments: Vec<SegmentCollected>) -> tantivy::Result<Collected> {
        let mut hits = Vec::new();
        let mut total = 0;
        let mut total_is_exact = true;
        let mut facets: Vec<(FacetDimension, HashMap<String, u64>)> =
            self.facets.iter().map(|&dimension| (dimension, HashMap::new())).collect();

        for segment in segments {
            hits.extend(segment.hits);
            total += segment.total;
            total_is_exact &= !segment.stopped_early;
            for (dimension, counts) in segment.facets {
                let Some((_, merged)) = facets.iter_mut().find(|(known, _)| *known == dimension)
                else {
                    continue;
                };
                for (value, count) in counts {
                    *merged.entry(value).or_insert(0) += count;
                }
            }
        }

        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.user_id.cmp(&b.user_id)));
        hits.truncate(self.keep);
        Ok(Collected { hits, total, total_is_exact, facets })
    }
}

impl HitSegmentCollector {
    /// Returns whether no later document of the segment can enter the page. That is the case
    /// when the page is full and its worst hit has the highest reachable score, because a later
    /// document could then only tie it with a larger user ID.
    fn is_saturated(&self) -> bool {
        let Some(stop_at_score) = self.stop_at_score else {
            return false;
        };
        self.heap.len() >= self.keep
            && self.heap.peek().is_some_and(|worst| worst.score >= stop_at_score)
    }

    /// Returns the distance to the nearest area within the radius, or `None` when no area is.
    fn nearest_within(&self, near: &GeoRadius, doc: DocId) -> Option<f64> {
        let geo = self.columns.geo.as_ref()?;
        let max_latitude_gap = near.radius_km / geo::KM_PER_DEGREE_LATITUDE;
        let mut nearest: Option<f64> = None;
        geo.for_each(doc, |packed| {
            let point = geo::unpack(packed);
            // Cheap rejection before the trigonometry.
            if (point.lat - near.center.lat).abs() > max_latitude_gap {
                return;
            }
            let distance = geo::distance_km(near.center, point);
            if distance <= near.radius_km && nearest.is_none_or(|nearest| distance < nearest) {
                nearest = Some(distance);
            }
        });
        nearest
    }
}

impl SegmentCollector for HitSegmentCollector {
    type Fruit = SegmentCollected;

    fn collect(&mut self, doc: DocId, score: Score) {
        let distance_km = match &self.near {
            None => None,
            Some(near) => match self.nearest_within(near, doc) {
                Some(distance) => Some(distance),
                None => return,
            },
        };

        self.total += 1;
        for facet in &mut self.facets {
            if let Some(column) = self.columns.facet(facet.dimension) {
                column.ords.for_each(doc, |ord| facet.counts[ord as usize] += 1);
            }
        }

        // Every document has exactly one user ID.
        let Some(user_id_ord) = self.user_id_ords.first(doc) else {
            return;
        };
        if let Some(after) = self.after {
            let is_after = score < after.score
                || (score == after.score && user_id_ord >= after.first_ord_after);
            if !is_after {
                return;
            }
        }

        let hit = SegmentHit { score, user_id_ord, doc, distance_km };
        if self.heap.len() < self.keep {
            self.heap.push(hit);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if hit < *worst {
                *worst = hit;
            }
        }
    }

    fn harvest(self) -> SegmentCollected {
        let mut hits = Vec::with_capacity(self.heap.len());
        for hit in self.heap.into_vec() {
            let mut user_id = String::new();
            // A read error leaves the hit out rather than failing the search. The column was
            // readable a moment ago, so this only happens on a damaged index.
            if matches!(self.user_ids.ord_to_str(hit.user_id_ord, &mut user_id), Ok(true)) {
                hits.push(CollectedHit {
                    score: hit.score,
                    user_id,
                    address: DocAddress::new(self.segment_ord, hit.doc),
                    distance_km: hit.distance_km,
                });
            }
        }

        let mut facets = Vec::with_capacity(self.facets.len());
        for facet in self.facets {
            let Some(column) = self.columns.facet(facet.dimension) else {
                continue;
            };
            let ords: Vec<u64> = facet
                .counts
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(|(ord, _)| ord as u64)
                .collect();
            let mut values = Vec::with_capacity(ords.len());
            let mut counts = ords.iter().map(|&ord| facet.counts[ord as usize]);
            let resolved = column.column.dictionary().sorted_ords_to_term_cb(&ords, |bytes| {
                let count = counts.next().unwrap_or_default();
                values.push((String::from_utf8_lossy(bytes).into_owned(), u64::from(count)));
            });
            if resolved.is_ok() {
                facets.push((facet.dimension, values));
            }
        }

        SegmentCollected { hits, total: self.total, stopped_early: self.stopped_early, facets }
    }
}
