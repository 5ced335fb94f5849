//! Tests of the directory index against a real tantivy index in a temporary folder.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use caduceus_directory::{
    Area, Coordinates, DirectoryBackend, DirectoryEntry, DirectoryIndex, Error, FacetCount,
    FacetDimension, GeoRadius, IndexConfig, OpenStatus, SearchRequest, SearchResults,
    VerificationLevel,
};

const UTRECHT: Coordinates = Coordinates { lat: 52.0907, lon: 5.1214 };
const ZEIST: Coordinates = Coordinates { lat: 52.0894, lon: 5.2331 };
const AMSTERDAM: Coordinates = Coordinates { lat: 52.3676, lon: 4.9041 };
const ROTTERDAM: Coordinates = Coordinates { lat: 51.9244, lon: 4.4777 };

fn area(city: &str, region: &str, coordinates: Option<Coordinates>) -> Area {
    Area {
        city: Some(city.to_owned()),
        postal_code: None,
        region: Some(region.to_owned()),
        country: Some("NL".to_owned()),
        coordinates,
    }
}

fn entry(user_id: &str, name: &str, specialties: &[&str], areas: Vec<Area>) -> DirectoryEntry {
    DirectoryEntry {
        user_id: user_id.to_owned(),
        display_name: Some(name.to_owned()),
        avatar_url: None,
        professions: vec!["physician".to_owned()],
        specialties: specialties.iter().map(|s| (*s).to_owned()).collect(),
        organisations: Vec::new(),
        areas,
        level: VerificationLevel::Medical,
        listed: true,
    }
}

fn open(path: &Path) -> DirectoryIndex {
    let (index, _) = DirectoryIndex::open_or_create(path, IndexConfig::default()).unwrap();
    index
}

fn index_with(path: &Path, entries: &[DirectoryEntry]) -> DirectoryIndex {
    let index = open(path);
    for entry in entries {
        index.upsert(entry).unwrap();
    }
    index.commit().unwrap();
    index
}

fn search(index: &DirectoryIndex, query: &str) -> SearchResults {
    index.search(&SearchRequest::new(query)).unwrap()
}

fn user_ids(results: &SearchResults) -> Vec<&str> {
    results.hits.iter().map(|hit| hit.entry.user_id.as_str()).collect()
}

fn sample() -> Vec<DirectoryEntry> {
    let mut wound_nurse = entry(
        "@petra.smit:erasmusmc.nl",
        "Petra Smit",
        &["wondzorg"],
        vec![area("Rotterdam", "Zuid-Holland", Some(ROTTERDAM))],
    );
    wound_nurse.professions = vec!["verpleegkundige".to_owned()];
    wound_nurse.organisations = vec!["Erasmus MC".to_owned()];
    wound_nurse.level = VerificationLevel::Identity;

    let mut gp = entry(
        "@bram.visser:huisarts.nl",
        "Bram Visser",
        &["huisarts"],
        vec![area("Zeist", "Utrecht", Some(ZEIST))],
    );
    gp.level = VerificationLevel::Identity;

    let mut cardiologist_utrecht = entry(
        "@anna.jansen:umcutrecht.nl",
        "Dr. Anna Jansen",
        &["cardiology"],
        vec![area("Utrecht", "Utrecht", Some(UTRECHT))],
    );
    cardiologist_utrecht.organisations = vec!["UMC Utrecht".to_owned()];

    vec![
        cardiologist_utrecht,
        entry(
            "@karel.de.vries:amc.nl",
            "Karel de Vries",
            &["Kardiologe"],
            vec![area("Amsterdam", "Noord-Holland", Some(AMSTERDAM))],
        ),
        entry(
            "@mo.bakker:erasmusmc.nl",
            "Mo Bakker",
            &["cardiologue"],
            vec![area("Rotterdam", "Zuid-Holland", Some(ROTTERDAM))],
        ),
        entry(
            "@lisa.mulder:umcutrecht.nl",
            "Lisa Mulder",
            &["dermatology"],
            vec![area("Utrecht", "Utrecht", Some(UTRECHT))],
        ),
        wound_nurse,
        gp,
    ]
}

#[test]
fn typo_finds_cardiologist_in_city() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_with(dir.path(), &sample());

    let results = search(&index, "kardiolog utrecht");

    assert_eq!(user_ids(&results), ["@anna.jansen:umcutrecht.nl"]);
    assert_eq!(results.total, 1);
}

#[test]
fn prefix_finds_name_being_typed() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_with(dir.path(), &sample());

    let results = search(&index, "jan");

    assert_eq!(user_ids(&results), ["@anna.jansen:umcutrecht.nl"]);

    // A trailing space ends the word, so it no longer matches as a prefix.
    let results = search(&index, "jan ");
    assert!(results.hits.is_empty(), "{:?}", user_ids(&results));
}

#[test]
fn title_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_with(dir.path(), &sample());

    let results = search(&index, "dr jansen");

    assert_eq!(user_ids(&results), ["@anna.jansen:umcutrecht.nl"]);
}

#[test]
fn synonyms_in_any_language_match() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_with(dir.path(), &sample());
    let cardiologists =
        ["@anna.jansen:umcutrecht.nl", "@karel.de.vries:amc.nl", "@mo.bakker:erasmusmc.nl"];

    for query in
        ["Kardiologie", "kardiologie", "cardiology ", "cardioloog ", "cardiólogo ", "cardiologue "]
    {
        let results = search(&index, query);
        let mut found = user_ids(&results);
        found.sort_unstable();
        let mut expected = cardiologists.to_vec();
        expected.sort_unstable();
        assert_eq!(found, expected, "query {query:?}");
    }

    // Entries list specialties in their own language; the index stores the vocabulary id.
    let stored = index.get("@karel.de.vries:amc.nl").unwrap().unwrap();
    assert_eq!(stored.specialties, ["Kardiologe"]);
}

#[test]
fn multi_word_specialty_and_city() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_with(dir.path(), &sample());

    let results = search(&index, "wound care Rotterdam");
    assert_eq!(user_ids(&results), ["@petra.smit:erasmusmc.nl"]);

    let results = search(&index, "verpleegkundige");
    assert_eq!(user_ids(&results), ["@petra.smit:erasmusmc.nl"]);

    let results = search(&index, "GP zeist");
    assert_eq!(user_ids(&results), ["@bram.visser:huisarts.nl"]);

    // A typo inside a multi-word name.
    let results = search(&index, "general pratice zeist");
    assert_eq!(user_ids(&results), ["@bram.visser:huisarts.nl"]);

    let results = search(&index, "erasmus");
    assert_eq!(results.total, 1, "only Petra lists Erasmus MC as organisation");
}

#[test]
fn ranking_puts_exact_before_prefix_before_fuzzy() {
    let dir = tempfile::tempdir().unwrap();
    let area = || vec![area("Utrecht", "Utrecht", None)];
    // User IDs sort opposite to the expected ranking, so the order can only come from scores.
    let entries = [
        entry("@a:example.org", "Eva Janssen", &[], area()),
        entry("@b:example.org", "Eva Jansenius", &[], area()),
        entry("@c:example.org", "Eva Jansen", &[], area()),
    ];
    let index = index_with(dir.path(), &entries);

    let results = search(&index, "jansen");

    assert_eq!(user_ids(&results), ["@c:example.org", "@b:example.org", "@a:example.org"]);
    let scores: Vec<f32> = results.hits.iter().map(|hit| hit.score).collect();
    assert!(scores[0] > scores[1], "{scores:?}");
    assert!(scores[1] > scores[2], "{scores:?}");
}

#[test]
fn filters_and_facet_counts() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_with(dir.path(), &sample());

    let mut request = SearchRequest::new("");
    request.facets = vec![FacetDimension::Specialty, FacetDimension::City, FacetDimension::Level];
    let results = index.search(&request).unwrap();
    assert_eq!(results.total, 6);
    let count = |value: &str, count: u64| FacetCount { value: value.to_owned(), count };
    assert_eq!(
        results.facets[&FacetDimension::Specialty],
        [
            count("cardiology", 3),
            count("dermatology", 1),
            count("general_practice", 1),
            count("wound_care", 1)
        ]
    );
    assert_eq!(
        results.facets[&FacetDimension::City],
        [count("Rotterdam", 2), count("Utrecht", 2), count("Amsterdam", 1), count("Zeist", 1)]
    );
    assert_eq!(results.facets[&FacetDimension::Level], [count("medical", 4), count("identity", 2)]);

    // Filters: a synonym for the specialty, a differently cased city.
    request.filters.specialties = vec!["Kardiologie".to_owned()];
    request.filters.cities = vec!["rotterdam".to_owned(), "UTRECHT".to_owned()];
    let results = index.search(&request).unwrap();
    let mut found = user_ids(&results);
    found.sort_unstable();
    assert_eq!(found, ["@anna.jansen:umcutrecht.nl", "@mo.bakker:erasmusmc.nl"]);
    assert_eq!(results.total, 2);
    assert_eq!(results.facets[&FacetDimension::City], [count("Rotterdam", 1), count("Utrecht", 1)]);

    request.filters = Default::default();
    request.filters.levels = vec![VerificationLevel::Identity];
    request.filters.regions = vec!["Utrecht".to_owned()];
    let results = index.search(&request).unwrap();
    assert_eq!(user_ids(&results), ["@bram.visser:huisarts.nl"]);

    request.filters = Default::default();
    request.filters.specialties = vec!["astrology".to_owned()];
    let error = index.search(&request).unwrap_err();
    assert!(matches!(error, Error::UnknownSpecialty(ref value) if value == "astrology"), "{error}");
}

#[test]
fn unlisted_entries_never_appear() {
    let dir = tempfile::tempdir().unwrap();
    let mut hidden = entry("@hidden:example.org", "Hidde Hidden", &["cardiology"], Vec::new());
    hidden.listed = false;
    let index = index_with(dir.path(), &[hidden]);

    assert_eq!(search(&index, "hidde hidden").total, 0);
    let mut request = SearchRequest::new("");
    request.facets = vec![FacetDimension::Specialty];
    let results = index.search(&request).unwrap();
    assert_eq!(results.total, 0);
    assert!(results.facets[&FacetDimension::Specialty].is_empty());
    assert!(index.get("@hidden:example.org").unwrap().is_some(), "still stored");
}

#[test]
fn restriction_to_user_ids() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_with(dir.path(), &sample());

    let mut request = SearchRequest::new("cardiology ");
    request.restrict_to = Some(BTreeSet::from([
        "@mo.bakker:erasmusmc.nl".to_owned(),
        "@lisa.mulder:umcutrecht.nl".to_owned(),
    ]));
    let results = index.search(&request).unwrap();
    assert_eq!(user_ids(&results), ["@mo.bakker:erasmusmc.nl"]);
    assert_eq!(results.total, 1);

    request.restrict_to = Some(BTreeSet::new());
    assert_eq!(index.search(&request).unwrap().total, 0, "an empty restriction matches nobody");
}

#[test]
fn cursor_pages_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<DirectoryEntry> = (0..25)
        .map(|i| {
            entry(
                &format!("@nurse{i:02}:example.org"),
                &format!("Nurse {i}"),
                &["wound care"],
                Vec::new(),
            )
        })
        .collect();
    let index = index_with(dir.path(), &entries);

    let mut request = SearchRequest::new("wondzorg");
    request.limit = 10;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let results = index.search(&request).unwrap();
        let expected_total = if pages == 0 { 25 } else { 26 };
        assert_eq!(results.total, expected_total);
        seen.extend(user_ids(&results).into_iter().map(str::to_owned));
        pages += 1;
        if pages == 1 {
            // An entry that sorts before the cursor must not shift the next page.
            index
                .upsert(&entry("@nurse00a:example.org", "Nurse new", &["wound care"], Vec::new()))
                .unwrap();
            index.commit().unwrap();
        }
        match results.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => break,
        }
    }

    let expected: Vec<String> = (0..25).map(|i| format!("@nurse{i:02}:example.org")).collect();
    assert_eq!(pages, 3);
    assert_eq!(seen, expected, "pages in user ID order, without repeats or gaps");
}

#[test]
fn cursor_of_other_query_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<DirectoryEntry> =
        (0..3).map(|i| entry(&format!("@n{i}:example.org"), "Nurse", &[], Vec::new())).collect();
    let index = index_with(dir.path(), &entries);

    let mut request = SearchRequest::new("nurse ");
    request.limit = 1;
    let cursor = index.search(&request).unwrap().next_cursor.unwrap();

    let mut other = SearchRequest::new("nurses ");
    other.cursor = Some(cursor);
    assert!(matches!(index.search(&other), Err(Error::InvalidCursor)));

    request.cursor = Some("not-a-cursor".to_owned());
    assert!(matches!(index.search(&request), Err(Error::InvalidCursor)));
}

#[test]
fn radius_search() {
    let dir = tempfile::tempdir().unwrap();
    let mut no_coordinates = entry(
        "@no.coordinates:example.org",
        "Nico Utrecht",
        &["cardiology"],
        vec![area("Utrecht", "Utrecht", None)],
    );
    no_coordinates.display_name = Some("Nico".to_owned());
    let mut entries = sample();
    entries.push(no_coordinates);
    let index = index_with(dir.path(), &entries);

    let mut request = SearchRequest::new("");
    request.filters.near = Some(GeoRadius { center: UTRECHT, radius_km: 10.0 });
    let results = index.search(&request).unwrap();
    let mut found = user_ids(&results);
    found.sort_unstable();
    assert_eq!(
        found,
        ["@anna.jansen:umcutrecht.nl", "@bram.visser:huisarts.nl", "@lisa.mulder:umcutrecht.nl"]
    );
    let zeist = results.hits.iter().find(|hit| hit.entry.user_id.starts_with("@bram")).unwrap();
    let distance = zeist.distance_km.unwrap();
    assert!((7.0..8.5).contains(&distance), "Zeist is about 7.7 km from Utrecht, got {distance}");

    request.query = "cardiology ".to_owned();
    request.filters.near = Some(GeoRadius { center: UTRECHT, radius_km: 50.0 });
    let results = index.search(&request).unwrap();
    let mut found = user_ids(&results);
    found.sort_unstable();
    assert_eq!(
        found,
        ["@anna.jansen:umcutrecht.nl", "@karel.de.vries:amc.nl", "@mo.bakker:erasmusmc.nl"]
    );

    request.filters.near = Some(GeoRadius { center: UTRECHT, radius_km: -1.0 });
    assert!(matches!(index.search(&request), Err(Error::InvalidRequest(_))));
}

#[test]
fn upsert_replaces_and_remove_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_with(dir.path(), &sample());

    let mut moved = index.get("@lisa.mulder:umcutrecht.nl").unwrap().unwrap();
    moved.areas = vec![area("Groningen", "Groningen", None)];
    index.upsert(&moved).unwrap();
    index.commit().unwrap();
    assert_eq!(search(&index, "mulder groningen").total, 1);
    assert_eq!(search(&index, "mulder utrecht").total, 0);
    assert_eq!(index.num_entries(), 6, "replaced, not added");

    index.remove("@lisa.mulder:umcutrecht.nl").unwrap();
    index.remove("@nobody:example.org").unwrap();
    index.commit().unwrap();
    assert_eq!(search(&index, "mulder").total, 0);
    assert_eq!(index.num_entries(), 5);
}

#[test]
fn invalid_input_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_with(dir.path(), &sample());

    let bad = entry("not-a-user-id", "Name", &[], Vec::new());
    assert!(matches!(index.upsert(&bad), Err(Error::InvalidEntry { .. })));
    let mut bad = entry("@a:example.org", "Name", &[], Vec::new());
    bad.areas = vec![area("Nowhere", "Nowhere", Some(Coordinates { lat: 91.0, lon: 0.0 }))];
    assert!(matches!(index.upsert(&bad), Err(Error::InvalidEntry { .. })));

    let long_query = "a ".repeat(200);
    assert!(matches!(index.search(&SearchRequest::new(long_query)), Err(Error::InvalidRequest(_))));
    let many_words = "word ".repeat(20);
    assert!(matches!(index.search(&SearchRequest::new(many_words)), Err(Error::InvalidRequest(_))));

    assert_eq!(index.num_entries(), 6, "nothing was written");
}

#[test]
fn changes_are_visible_within_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_with(dir.path(), &sample());

    let mut slowest = Duration::ZERO;
    for round in 0..5 {
        let user_id = format!("@fresh{round}:example.org");
        let name = format!("Freshly Added{round}");
        let started = Instant::now();
        index.upsert(&entry(&user_id, &name, &[], Vec::new())).unwrap();
        while search(&index, &format!("freshly added{round}")).total == 0 {
            assert!(started.elapsed() < Duration::from_secs(1), "not visible after one second");
            std::thread::sleep(Duration::from_millis(5));
        }
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest visibility after upsert: {slowest:?}");

    let started = Instant::now();
    index.remove("@fresh0:example.org").unwrap();
    while search(&index, "freshly added0").total != 0 {
        assert!(started.elapsed() < Duration::from_secs(1), "still visible after one second");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn deleted_index_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory");
    let store = sample();

    let (index, status) = DirectoryIndex::open_or_create(&path, IndexConfig::default()).unwrap();
    assert_eq!(status, OpenStatus::Created);
    index.rebuild_from(store.clone(), |_| {}).unwrap();
    index.close().unwrap();

    let (index, status) = DirectoryIndex::open_or_create(&path, IndexConfig::default()).unwrap();
    assert_eq!(status, OpenStatus::Ready);
    assert_eq!(index.num_entries(), 6);
    index.close().unwrap();

    fs::remove_dir_all(&path).unwrap();
    let (index, status) = DirectoryIndex::open_or_create(&path, IndexConfig::default()).unwrap();
    assert_eq!(status, OpenStatus::Created);
    assert!(status.needs_rebuild());
    assert_eq!(index.num_entries(), 0);

    let mut reports = Vec::new();
    let report = index.rebuild_from(store.clone(), |progress| reports.push(progress)).unwrap();
    assert_eq!(report.indexed, 6);
    assert_eq!(report.expected, Some(6));
    assert!(reports.last().unwrap().finished);
    assert_eq!(search(&index, "kardiolog utrecht").total, 1);
}

#[test]
fn damaged_index_is_detected_and_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory");
    let store = sample();
    index_with(&path, &store).close().unwrap();

    fs::write(path.join("meta.json"), b"{ not json").unwrap();
    let error = DirectoryIndex::open_or_create(&path, IndexConfig::default()).err().unwrap();
    assert!(matches!(error, Error::Damaged { .. }), "{error}");

    let index = DirectoryIndex::recreate(&path, IndexConfig::default()).unwrap();
    index.rebuild_from(store.clone(), |_| {}).unwrap();
    assert_eq!(search(&index, "jansen").total, 1);
    index.close().unwrap();

    // Segment files removed behind the index's back.
    for file in fs::read_dir(&path).unwrap() {
        let file = file.unwrap().path();
        if file.extension().is_some_and(|extension| extension == "idx") {
            fs::remove_file(file).unwrap();
        }
    }
    let error = DirectoryIndex::open_or_create(&path, IndexConfig::default()).err().unwrap();
    assert!(matches!(error, Error::Damaged { .. }), "{error}");
}

#[test]
fn check_notices_folder_deleted_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory");
    let index = index_with(&path, &sample());
    index.check().unwrap();

    fs::remove_dir_all(&path).unwrap();

    assert!(matches!(index.check(), Err(Error::Damaged { .. })));
}

#[test]
fn unclean_shutdown_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory");
    index_with(&path, &sample()).close().unwrap();

    // The marker a crashed process leaves behind.
    fs::write(path.join("caduceus-directory.open"), b"").unwrap();

    let (_index, status) = DirectoryIndex::open_or_create(&path, IndexConfig::default()).unwrap();
    assert_eq!(status, OpenStatus::Unclean);
    assert!(status.needs_rebuild());
}

#[test]
fn second_open_is_locked_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let _index = open(dir.path());

    let error = DirectoryIndex::open_or_create(dir.path(), IndexConfig::default()).err().unwrap();

    assert!(matches!(error, Error::Locked { .. }), "{error}");
}

#[test]
fn early_stop_returns_same_pages() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    // Many segments, each sorted by user ID, with names that tie and names that rank lower.
    // Twelve commits make tantivy's merge policy merge segments, whose order must hold too.
    for batch in 0..12 {
        for i in 0..20 {
            let n = batch * 20 + i;
            let name = match n % 3 {
                0 => format!("Dirk Dekker{n}"),
                1 => format!("De Dekker {n}"),
                _ => format!("Daan de Vries {n}"),
            };
            index
                .upsert(&entry(
                    &format!("@u{:03}:example.org", (n * 37) % 240),
                    &name,
                    &[],
                    Vec::new(),
                ))
                .unwrap();
        }
        index.commit().unwrap();
    }
    let started = Instant::now();
    while index.segment_count() >= 12 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let segments = index.segment_count();
    assert!((2..12).contains(&segments), "expected merged segments, found {segments}");

    for query in ["de", "d", "dekker", "de v"] {
        let mut exact = SearchRequest::new(query);
        exact.limit = 7;
        let mut early = exact.clone();
        early.exact_total = false;

        let mut pages = 0;
        loop {
            let expected = index.search(&exact).unwrap();
            let actual = index.search(&early).unwrap();
            assert_eq!(user_ids(&actual), user_ids(&expected), "query {query:?}, page {pages}");
            assert!(actual.total <= expected.total);
            assert!(expected.total_is_exact);
            pages += 1;
            match (expected.next_cursor, actual.next_cursor) {
                (Some(expected_cursor), Some(actual_cursor)) => {
                    exact.cursor = Some(expected_cursor);
                    early.cursor = Some(actual_cursor);
                }
                (None, None) => break,
                (expected_cursor, actual_cursor) => {
                    panic!("query {query:?}: cursors differ: {expected_cursor:?} {actual_cursor:?}")
                }
            }
        }
        assert!(pages > 3, "query {query:?} had {pages} pages");
    }

    let mut early = SearchRequest::new("d");
    early.exact_total = false;
    early.limit = 5;
    let results = index.search(&early).unwrap();
    assert!(!results.total_is_exact, "a broad prefix stops early");
    early.facets = vec![FacetDimension::Level];
    let results = index.search(&early).unwrap();
    assert!(results.total_is_exact, "facets need every match");
    assert_eq!(results.total, 240);
}
